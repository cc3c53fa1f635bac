"""The fp16 path Ascend runs, run on CPU: fp16 UNet forward near fp32, the fp32 upcasts that keep
attention and LayerNorm finite and accurate, bf16 refused on CPU, and an O2 fp16 training run whose
dynamic loss scaler meets real overflows, skips them, halves the scale and recovers."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ldm.errors import UserError
from ldm.models.attention import CrossAttention
from ldm.models.layers import LayerNorm, set_compute_dtype
from ldm.train.config import parse_config
from ldm.train.loop import TrainRun
from ldm.train.precision import amp_compute_dtype, apply_precision, unet_compute_dtype
from tests.train_standin import make_shapes
from unet_vae_helpers import build_unet, references

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_V2 = os.path.join(REPO, "configs", "tiny-v2.yaml")
FP16_EPS = 2.0 ** -11  # fp16 unit roundoff (11-bit significand)


def test_fp16_unet_forward_within_8_roundoffs_of_fp32():
    """use_fp16 UNet (SD 2.x layout: linear proj_in, upcast attention, depth 2) vs the same weights in fp32.
    Measured (MindSpore 2.8 CPU, 4 inputs, PyNative and GRAPH alike): max|fp16 - fp32| = 1.8e-3 .. 2.6e-3
    of max|fp32| (about 4-5 roundoffs: a dozen fp16-rounded stages in series add ~sqrt(12) u in
    quadrature). Bound 8 u = 3.9e-3, 1.5x the worst measured. The error must also exceed u / 4: an fp32
    run differs from itself by ~1e-6, so a silent fp32 fallback fails here. PyNative (10 s; GRAPH
    compiles take 40 s here): the compiled fp16 graph is what the O2 training test below runs."""
    refs = references()
    name = "unet_sd2"
    args = [Tensor(refs[f"{name}_{k}"]) for k in ("sample", "timesteps", "context")]
    fp32 = build_unet(name)
    fp16 = build_unet(name, use_fp16=True)
    assert unet_compute_dtype(fp16) == ms.float16
    out32 = fp32(*args).asnumpy()
    out16 = fp16(*args).asnumpy()
    assert out16.dtype == np.float32  # the UNet hands fp32 to the sampler / loss
    rel = np.abs(out16 - out32).max() / np.abs(out32).max()
    print(f"fp16 vs fp32 UNet: max error {rel:.2e} of max|out| ({rel / FP16_EPS:.1f} roundoffs)")
    assert FP16_EPS / 4 < rel < 8 * FP16_EPS


def test_upcast_attention_survives_logits_beyond_fp16_range():
    """Self-attention with identity projections on tokens of magnitude 100 (dim 64): the diagonal logits
    are 100^2 * 64 / 8 = 80000 > 65504, which is inf in fp16 (softmax -> NaN). With the fp32 q.k^T
    (upcast_attention) each token attends to itself: out = x up to fp16 rounding of the values."""
    dim = 64
    attn = CrossAttention(dim, heads=1, dim_head=dim, upcast_attention=True)
    eye = np.eye(dim, dtype=np.float32)
    for cell in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
        cell.weight.set_data(Tensor(eye))
    attn.to_out[0].bias.set_data(Tensor(np.zeros(dim, np.float32)))
    set_compute_dtype(attn, ms.float16)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(2, 12, dim))
    x = (100.0 * signs).astype(np.float16)
    out = attn(Tensor(x)).asnumpy()
    assert out.dtype == np.float16
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.astype(np.float32), x.astype(np.float32), rtol=0, atol=100 * 2 * FP16_EPS)


def test_layernorm_upcast_keeps_offset_activations_exact():
    """fp16 activations with a large common offset (200 + N(0, 1)): our LayerNorm normalises in fp32, so its
    error is the fp16 rounding of the result (~1e-3). MindSpore 2.8's CPU fp16 LayerNorm kernel itself
    loses 0.08 there (measured; its fp16 GroupNorm kernel stays at 1e-3, so only LayerNorm shows it on CPU)."""
    rng = np.random.default_rng(0)
    x = (200.0 + rng.standard_normal((2, 256, 64))).astype(np.float16)
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    out = LayerNorm(64)(Tensor(x)).asnumpy()
    assert out.dtype == np.float16
    assert np.abs(out.astype(np.float64) - ref).max() < 4e-3  # |ref| < 4: half an fp16 ulp is <= 2e-3


class _Cfg:
    def __init__(self, amp_level, amp_dtype="fp16"):
        self.amp_level, self.amp_dtype = amp_level, amp_dtype
        self.init_loss_scale, self.loss_scale_factor, self.scale_window = 1024.0, 2.0, 1000


class _Model:
    def __init__(self, unet):
        self.diffusion_model = unet


def test_precision_switch_on_cpu():
    """O0 + fp32 YAML: no scaler. O2 fp16: the UNet's cells switch to fp16, with a scaler. A YAML with
    use_fp16 keeps fp16 under O0 and gets a scaler. bf16 on CPU: one clear error."""
    assert ms.get_context("device_target") == "CPU"
    assert apply_precision(_Cfg("O0"), _Model(build_unet("unet_sd1"))) is None
    unet = build_unet("unet_sd1")
    scaler = apply_precision(_Cfg("O2"), _Model(unet))
    assert isinstance(scaler, ms.amp.DynamicLossScaler) and float(scaler.scale_value.asnumpy()) == 1024.0
    assert unet_compute_dtype(unet) == ms.float16
    proj = unet.input_blocks[1][1].proj_in  # a conv of a transformer: computes fp16 now
    assert proj(Tensor(np.ones((1, proj.in_channels, 2, 2), np.float32))).dtype == ms.float16
    assert apply_precision(_Cfg("O0"), _Model(build_unet("unet_sd1", use_fp16=True))) is not None
    with pytest.raises(UserError, match="bf16 is not available on CPU"):
        amp_compute_dtype("O2", "bf16")


@pytest.mark.slow
def test_o2_fp16_training_overflows_skips_halves_and_recovers(tmp_path):
    """configs/tiny-v2.yaml trained with --amp_level O2 --amp_dtype fp16 from loss scale 2^24. The fp16
    backward overflows (fp32 would not: 2^24 x these gradients is far below 3.4e38), so the first steps are
    skipped with the weights untouched while the scale halves; once it is small enough the steps update the
    weights with finite losses (measured: steps 1-5 and 7 overflow, 2^24 -> 2^18). The trained UNet's
    convs compute in fp16."""
    data = make_shapes(tmp_path / "shapes", num_train=16, size=32)
    cfg = parse_config(["--model_config", TINY_V2, "--data_path", data, "--output_path", str(tmp_path / "out"),
                        "--image_size", "32", "--train_batch_size", "2", "--max_steps", "12", "--epochs", "0",
                        "--start_learning_rate", "1e-3", "--amp_level", "O2", "--amp_dtype", "fp16",
                        "--init_loss_scale", str(2.0 ** 24), "--loss_scale_factor", "2", "--scale_window", "1000",
                        "--ckpt_save_interval", "100", "--show_progress", "False"])
    steps = []

    class Recording(TrainRun):
        def after_step(self, epoch, loss, lr, step_time, overflow, bar, detail=None):
            weights = np.concatenate([p.asnumpy().ravel() for p in self.trainable])
            steps.append((overflow, loss, float(self.scaler.scale_value.asnumpy()), weights))
            super().after_step(epoch, loss, lr, step_time, overflow, bar, detail)

    run = Recording(cfg)
    unet = run.model.diffusion_model
    assert unet_compute_dtype(unet) == ms.float16
    start = np.concatenate([p.asnumpy().ravel() for p in run.trainable])
    run.run()
    flags = [s[0] for s in steps]
    scales = [s[2] for s in steps]
    print("overflow per step:", flags, "scale after each step:", scales)
    assert flags[:2] == [True, True], flags  # 2^24 and 2^23 overflow the fp16 backward
    assert not any(flags[-4:]), flags  # the scale has come down: the run trains on
    scale = 2.0 ** 24
    for k, overflow in enumerate(flags):  # halve on every overflow; window 1000: never grows here
        scale = scale / 2 if overflow else scale
        assert scales[k] == scale, (k, scales)
    previous = start
    for k, (overflow, loss, _, weights) in enumerate(steps):
        if overflow:
            np.testing.assert_array_equal(weights, previous, err_msg=f"step {k + 1} overflowed but updated")
        else:
            assert np.isfinite(loss) and np.isfinite(weights).all()
            assert not np.array_equal(weights, previous), f"step {k + 1} did not update"
        previous = weights
    conv = unet.input_blocks[0][0].conv
    assert conv(Tensor(np.zeros((1, 4, 8, 8), np.float32))).dtype == ms.float16
