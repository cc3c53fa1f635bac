"""Training an inpainting model (ldm.train.inpaint): the objective's UNet input is [x_t, mask, masked-image
latents], and a short run of train_text_to_image.py's trainer on the tiny 9-channel config gives a finite loss
and moves the weights that read the mask channels."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ldm.models.latent_diffusion import build_model
from ldm.train.config import parse_config
from ldm.train.inpaint import InpaintConditioning, inpaint_conditioning
from ldm.train.trainer import DiffusionObjective
from tests.train_standin import make_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_INPAINT = os.path.join(REPO, "configs", "tiny-inpaint-v2.yaml")


@pytest.fixture(scope="module")
def model():
    ms.set_seed(0)
    return build_model(TINY_INPAINT)


def test_objective_unet_input_is_latents_mask_masked_latents(model):
    rng = np.random.default_rng(0)
    n, size = 2, 32
    masks = np.zeros((n, 1, size, size), np.float32)
    masks[0, :, 8:24, 4:20] = 1.0
    masks[1] = 1.0
    batch = dict(image=rng.uniform(-1, 1, (n, 3, size, size)).astype(np.float32),
                 vae_noise=rng.standard_normal((n, 4, 16, 16)).astype(np.float32), aux_seed=np.array([5, 6]))
    concat = InpaintConditioning(model, jit=False).concat(batch, masks=masks).asnumpy()
    assert concat.shape == (n, 5, 16, 16)
    np.testing.assert_array_equal(concat[:, :1], masks[:, :, ::2, ::2])        # nearest, VAE factor 2
    masked = batch["image"] * (masks < 0.5)                                     # the repaint region set to 0
    mean, logvar = model.encode_first_stage(Tensor(masked))
    expected = model.get_first_stage_encoding(mean, logvar, Tensor(batch["vae_noise"])).asnumpy()
    np.testing.assert_allclose(concat[:, 1:], expected, atol=1e-5)

    seen = []
    original = model.apply_model

    def spy(x, t, context):
        seen.append(x.asnumpy())
        return original(x, t, context)
    object.__setattr__(model, "apply_model", spy)
    try:
        latents, noise = (rng.standard_normal((n, 4, 16, 16)).astype(np.float32) for _ in range(2))
        abar = np.array([0.3, 0.8], np.float32)
        context = rng.standard_normal((n, 77, 32)).astype(np.float32)
        ones = np.ones(n, np.float32)
        loss, _ = DiffusionObjective(model, "v")(Tensor(latents), Tensor(context), Tensor(np.array([600, 100], np.int32)),
                                                 Tensor(noise), Tensor(noise), Tensor(abar), Tensor(ones), Tensor(ones),
                                                 Tensor(concat))
    finally:
        object.__delattr__(model, "apply_model")
    x = seen[0]
    x_t = np.sqrt(abar)[:, None, None, None] * latents + np.sqrt(1 - abar)[:, None, None, None] * noise
    assert x.shape == (n, 9, 16, 16) and np.isfinite(float(loss.asnumpy()))
    np.testing.assert_allclose(x[:, :4], x_t, atol=1e-5)
    np.testing.assert_array_equal(x[:, 4:], concat)


def test_masks_follow_the_sample_and_refuse_latent_cache(model):
    batch = dict(image=np.zeros((3, 3, 64, 64), np.float32), aux_seed=np.array([1, 2, 1]))
    masks = InpaintConditioning.masks(batch)
    assert masks.shape == (3, 1, 64, 64) and set(np.unique(masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(masks[0], masks[2])                          # same sample seed, same mask
    assert not np.array_equal(masks[0], masks[1])
    validation = InpaintConditioning.masks(dict(image=batch["image"], index=np.array([4, 4])))
    np.testing.assert_array_equal(validation[0], validation[1])

    class Recipe:
        cache_latents = True
    with pytest.raises(Exception, match="cannot be cached"):
        inpaint_conditioning(model, Recipe())


def test_tiny_inpainting_finetune_runs(tmp_path):
    from ldm.pipeline_inpaint import InpaintPipeline, pipeline_class
    from ldm.train.loop import TrainRun
    data = make_shapes(tmp_path / "shapes", num_train=4, size=32)
    cfg = parse_config(["--train_config", os.path.join(REPO, "configs", "train", "train_config_tiny_vpred.yaml"),
                        "--model_config", TINY_INPAINT, "--data_path", data, "--output_path", str(tmp_path / "out"),
                        "--train_batch_size", "2", "--epochs", "1", "--warmup_steps", "0", "--scheduler", "constant",
                        "--start_learning_rate", "1e-3", "--use_ema", "False", "--show_progress", "False"])
    run = TrainRun(cfg)
    assert run.inpaint is not None and pipeline_class(run.model) is InpaintPipeline
    conv = next(p for p in run.model.get_parameters() if p.name.endswith("input_blocks.0.0.conv.weight"))
    before = conv.asnumpy().copy()
    summary = run.run()
    assert summary["global_step"] == 2 and np.isfinite(summary["last_loss"])
    moved = np.abs(conv.asnumpy() - before)
    assert moved[:, :4].max() > 0 and moved[:, 4:5].max() > 0 and moved[:, 5:].max() > 0   # x_t, mask, masked latents
    assert os.path.isfile(tmp_path / "out" / "ckpt" / "sd-1.ckpt")
