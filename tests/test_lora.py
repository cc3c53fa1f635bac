"""LoRA: trainable-parameter formula, small file, merged == unmerged, load into a fresh model, training."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ldm.errors import CheckpointError
from ldm.models.lora import (inject_lora, load_lora, lora_param_count, lora_parameters, merge_lora,
                            save_lora)
from tests.train_standin import StandInLDM


def _inputs():
    rng = np.random.default_rng(0)
    return (Tensor(rng.standard_normal((2, 4, 4, 4)).astype(np.float32)), Tensor(np.array([5, 600], np.int32)),
            Tensor(rng.standard_normal((2, 77, 8)).astype(np.float32)))


def _randomise(params, seed=1):
    rng = np.random.default_rng(seed)
    for p in params:
        p.set_data(Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))


def _build(seed=0):
    ms.set_seed(seed)
    return StandInLDM()


def test_trainable_count_file_size_and_merge(tmp_path):
    model = _build()
    unet = model.diffusion_model
    base_count = sum(int(np.prod(p.shape)) for p in model.get_parameters())
    x, t, c = _inputs()
    base_out = model.apply_model(x, t, c).asnumpy()
    params = inject_lora(unet, rank=2)
    # to_q (16x16), to_k (8->16), to_v (8->16), to_out.0 (16x16): rank * (in + out) each
    expected = 2 * ((16 + 16) + (8 + 16) + (8 + 16) + (16 + 16))
    assert sum(int(np.prod(p.shape)) for p in params) == expected == lora_param_count(unet, 2)
    names = sorted(p.name for p in params)
    assert "model.diffusion_model.attn1.to_q.lora_down.weight" in names
    assert "model.diffusion_model.attn1.to_out.0.lora_up.weight" in names
    # zero-initialised up: the injected model computes what the base model did
    np.testing.assert_allclose(model.apply_model(x, t, c).asnumpy(), base_out, atol=1e-6)
    _randomise(params)
    lora_out = model.apply_model(x, t, c).asnumpy()
    assert np.abs(lora_out - base_out).max() > 1e-3
    path = save_lora(model, str(tmp_path / "lora.ckpt"))
    assert set(ms.load_checkpoint(path)) == set(names) | {"lora_meta.alpha"}
    merged = merge_lora(model)
    assert merged == 4 and not lora_parameters(model)
    np.testing.assert_allclose(model.apply_model(x, t, c).asnumpy(), lora_out, atol=1e-5)
    assert sorted(p.name for p in model.get_parameters()) == sorted(p.name for p in _build().get_parameters())



def test_lora_file_is_small_relative_to_a_real_unet(tmp_path):
    """< 2% of the base weights: measured on the real tiny model when it is available."""
    from ldm.models.latent_diffusion import build_model
    model = build_model(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny-v2-vpred.yaml"))
    base_bytes = 4 * sum(int(np.prod(p.shape)) for p in model.get_parameters())
    unet = model.model.diffusion_model
    params = inject_lora(unet, rank=4)
    assert sum(int(np.prod(p.shape)) for p in params) == lora_param_count(unet, 4) > 0
    path = save_lora(model, str(tmp_path / "lora.ckpt"))
    assert os.path.getsize(path) < 0.02 * base_bytes, (os.path.getsize(path), base_bytes)


def test_load_lora_into_fresh_model_with_scale(tmp_path):
    model = _build()
    x, t, c = _inputs()
    base_out = model.apply_model(x, t, c).asnumpy()
    _randomise(inject_lora(model.diffusion_model, rank=3, alpha=6))
    full = model.apply_model(x, t, c).asnumpy()
    path = save_lora(model, str(tmp_path / "l.ckpt"))
    fresh = _build()
    assert load_lora(fresh, path, scale=1.0) == 4
    np.testing.assert_allclose(fresh.apply_model(x, t, c).asnumpy(), full, atol=1e-6)
    half = _build()
    load_lora(half, path, scale=0.0)
    np.testing.assert_allclose(half.apply_model(x, t, c).asnumpy(), base_out, atol=1e-6)
    ms.save_checkpoint([{"name": "model.diffusion_model.nope.lora_down.weight", "data": Tensor(np.zeros((2, 2), np.float32))},
                        {"name": "model.diffusion_model.nope.lora_up.weight", "data": Tensor(np.zeros((2, 2), np.float32))}],
                       str(tmp_path / "bad.ckpt"))
    with pytest.raises(CheckpointError, match="not in this model"):
        load_lora(_build(), str(tmp_path / "bad.ckpt"))


def test_lora_training_saves_only_lora_and_freezes_base(tmp_path):
    from ldm.train.config import parse_config
    from ldm.train.loop import TrainRun
    from tests.train_standin import make_shapes, write_standin_config
    data = make_shapes(tmp_path / "shapes", num_train=8, size=32)
    cfg = parse_config(["--model_config", write_standin_config(tmp_path), "--data_path", data,
                        "--output_path", str(tmp_path / "out"), "--image_size", "32", "--train_batch_size", "4",
                        "--max_steps", "3", "--use_lora", "True", "--lora_rank", "2", "--lora_ft_text_encoder", "True",
                        "--start_learning_rate", "1e-2", "--show_progress", "False"])
    run = TrainRun(cfg)
    base_before = {p.name: p.asnumpy().copy() for p in run.model.get_parameters() if "lora_" not in p.name}
    run.run()
    files = os.listdir(tmp_path / "out" / "ckpt")
    assert "sd-step3_lora.ckpt" in files and not any(f.startswith("sd-") and "lora" not in f for f in files)
    saved = ms.load_checkpoint(str(tmp_path / "out" / "ckpt" / "sd-step3_lora.ckpt"))
    assert all("lora_" in k for k in saved)
    assert any(k.startswith("cond_stage_model.") for k in saved)  # text-encoder adapters too
    for p in run.model.get_parameters():
        if "lora_" not in p.name:
            np.testing.assert_array_equal(p.asnumpy(), base_before[p.name])
    ups = [p for p in lora_parameters(run.model) if "lora_up" in p.name]
    assert any(np.abs(p.asnumpy()).max() > 0 for p in ups)


@pytest.mark.parametrize("scale", [0.3, 1.7])
def test_fractional_scale_matches_numpy_reference(tmp_path, scale):
    """y = x W^T + b + scale * (alpha / rank) * x (up @ down)^T, computed in numpy from the file's
    arrays: a scale applied twice (scale**2) or alpha/rank dropped fails here (0 and 1 cannot tell)."""
    rank, alpha = 3, 4.5
    model = _build()
    params = inject_lora(model.diffusion_model, rank=rank, alpha=alpha)
    _randomise(params, seed=7)
    path = save_lora(model, str(tmp_path / "l.ckpt"))
    arrays = {p.name: p.asnumpy().astype(np.float64) for p in params}
    prefix = "model.diffusion_model.attn1.to_out.0."
    down, up = arrays[prefix + "lora_down.weight"], arrays[prefix + "lora_up.weight"]

    fresh = _build()
    layer = fresh.diffusion_model.attn1.to_out[0]
    w, b = layer.weight.asnumpy().astype(np.float64), layer.bias.asnumpy().astype(np.float64)
    x = np.random.default_rng(3).standard_normal((5, w.shape[1]))
    want = x @ (w + scale * (alpha / rank) * up @ down).T + b

    assert load_lora(fresh, path, scale=scale) == 4
    got = layer(Tensor(x.astype(np.float32))).asnumpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    merge_lora(fresh)       # folding keeps the same scale
    np.testing.assert_allclose(layer.weight.asnumpy(), w + scale * (alpha / rank) * up @ down, rtol=0, atol=1e-6)
    np.testing.assert_allclose(layer(Tensor(x.astype(np.float32))).asnumpy(), want, rtol=0, atol=1e-5)

    injected = _build()     # inject_lora's own scale argument follows the same convention
    inject_lora(injected.diffusion_model, rank=rank, alpha=alpha, scale=scale)
    target = injected.diffusion_model.attn1.to_out[0]
    target.lora_down.set_data(Tensor(down.astype(np.float32)))
    target.lora_up.set_data(Tensor(up.astype(np.float32)))
    np.testing.assert_allclose(target(Tensor(x.astype(np.float32))).asnumpy(), want, rtol=0, atol=1e-5)
