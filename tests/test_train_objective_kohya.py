"""kohya-ss's objective options (ldm.train.objective_options, ldm.train.trainer): each one against its
formula written out here in float64 numpy (kohya's train_util / custom_train_functions, read 2026-12),
the objective in the graph with a fixed-output model, then one short run with every option on and the
DreamBooth / textual-inversion batches. Refusals are rows of tests/test_train_bad_inputs.py's table."""
import math
import os

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor, ops

from ldm.data.dataset import ImageCaptionDataset
from ldm.diffusion.schedule import NoiseSchedule
from ldm.train.objective_options import (NoiseSettings, aux_rng, bilinear_resize, compose_noise,
                                         latent_channel_means, pyramid_noise, timestep_range)
from ldm.train.trainer import DiffusionObjective, huber_threshold, timestep_terms
from tests.test_train_objective import FixedOutputModel
from tests.train_standin import make_shapes, write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hand_abar(zero_snr=False):
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    if zero_snr:                        # Lin et al. 2023, algorithm 1, on sqrt(abar)
        root = np.sqrt(abar)
        root = (root - root[-1]) * root[0] / (root[0] - root[-1])
        abar = root ** 2
    return abar


# ---------------------------------------------------------------- torch's bilinear upsampling, one pixel at a time
def _torch_bilinear_pixel(x, out_h, out_w):
    """nn.Upsample(size, mode='bilinear') (align_corners False) as torch's upsample_bilinear2d reads: source
    index max((dst + 0.5) * in / out - 0.5, 0), neighbour index +1 unless at the last row/column."""
    in_h, in_w = x.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = max((i + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = int(sy)
        y1 = y0 + (1 if y0 < in_h - 1 else 0)
        ly = sy - y0
        for j in range(out_w):
            sx = max((j + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = int(sx)
            x1 = x0 + (1 if x0 < in_w - 1 else 0)
            lx = sx - x0
            out[i, j] = ((1 - ly) * ((1 - lx) * x[y0, x0] + lx * x[y0, x1]) +
                         ly * ((1 - lx) * x[y1, x0] + lx * x[y1, x1]))
    return out


def test_bilinear_resize_is_torchs_half_pixel_bilinear():
    np.testing.assert_allclose(bilinear_resize(np.array([[0.0, 1.0]]), 1, 4), [[0.0, 0.25, 0.75, 1.0]])
    rng = np.random.default_rng(0)
    for h, w, out_h, out_w in [(1, 1, 4, 6), (2, 3, 8, 8), (5, 7, 16, 12), (3, 1, 9, 5), (6, 6, 6, 6)]:
        x = rng.standard_normal((2, h, w))
        got = bilinear_resize(x, out_h, out_w)
        for k in range(2):
            np.testing.assert_allclose(got[k], _torch_bilinear_pixel(x[k], out_h, out_w), rtol=1e-12, atol=1e-12)
        # MindSpore's own bilinear kernel (half-pixel centres, float32) agrees too
        ms_out = ops.interpolate(Tensor(x[None].astype(np.float32)), size=(out_h, out_w), mode="bilinear",
                                 align_corners=False).asnumpy()[0]
        np.testing.assert_allclose(got, ms_out, atol=2e-6)


# ---------------------------------------------------------------- pyramid (multires) noise
def _kohya_pyramid(noise, rng, iterations, discount):
    """kohya's pyramid_noise_like on one sample, in float64, with the pixel-loop upsampling above."""
    c, w, h = noise.shape                           # kohya's names: w is the height axis
    noise = noise.astype(np.float64).copy()
    for i in range(iterations):
        r = rng.random() * 2 + 2
        wn, hn = max(1, int(w / (r ** i))), max(1, int(h / (r ** i)))
        level = rng.standard_normal((c, wn, hn))
        noise += np.stack([_torch_bilinear_pixel(level[k], w, h) for k in range(c)]) * discount ** i
        if wn == 1 or hn == 1:
            break
    return noise / noise.std(ddof=1)


def test_pyramid_noise_equals_kohyas_loop_and_stops_at_one_pixel():
    noise = np.random.default_rng(1).standard_normal((4, 12, 8))
    for iterations, discount in [(1, 0.3), (3, 0.5), (6, 0.3)]:
        got = pyramid_noise(noise, np.random.default_rng(5), iterations, discount)
        np.testing.assert_allclose(got, _kohya_pyramid(noise, np.random.default_rng(5), iterations, discount),
                                   rtol=1e-12, atol=1e-12)
        assert abs(got.std(ddof=1) - 1.0) < 1e-12
    # a 12x8 latent is 1 pixel wide by level 3 (r >= 2): more levels draw nothing more
    np.testing.assert_array_equal(pyramid_noise(noise, np.random.default_rng(5), 4, 0.3),
                                  pyramid_noise(noise, np.random.default_rng(5), 16, 0.3))


def _batch(n=3, shape=(4, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    return dict(noise=rng.standard_normal((n,) + shape).astype(np.float32),
                offset_noise=rng.standard_normal((n, shape[0], 1, 1)).astype(np.float32),
                aux_seed=rng.integers(0, 2 ** 63, size=n, dtype=np.int64))


def test_multires_in_a_batch_is_per_sample_and_follows_the_offset():
    batch = _batch()
    settings = NoiseSettings(noise_offset=0.1, multires_noise_iterations=6, multires_noise_discount=0.3)
    got = compose_noise(batch, settings)
    for k, seed in enumerate(batch["aux_seed"]):
        with_offset = batch["noise"][k].astype(np.float64) + 0.1 * batch["offset_noise"][k].astype(np.float64)
        expected = _kohya_pyramid(with_offset, aux_rng(seed, "pyramid"), 6, 0.3)
        np.testing.assert_allclose(got.target[k], expected, rtol=1e-6, atol=1e-6)
    # a sample's noise does not depend on the rest of its batch (ranks and batch sizes see the same)
    alone = compose_noise({key: value[1:2] for key, value in batch.items()}, settings)
    np.testing.assert_array_equal(alone.target[0], got.target[1])
    assert got.input is got.target                  # no input perturbation


# ---------------------------------------------------------------- offset: random strength, adaptive scale
@pytest.mark.parametrize("adaptive", [0.0, 0.5, -3.0])
def test_offset_random_strength_and_adaptive_scale(adaptive):
    batch = _batch(n=4)
    latents = np.random.default_rng(2).standard_normal((4, 4, 8, 8)) + 0.3
    means = latent_channel_means(latents)
    np.testing.assert_allclose(means, np.abs(latents.mean(axis=(2, 3))))
    settings = NoiseSettings(noise_offset=0.2, noise_offset_random_strength=True, adaptive_noise_scale=adaptive)
    assert settings.needs_latents == bool(adaptive)
    got = compose_noise(batch, settings, means if adaptive else None)
    for k, seed in enumerate(batch["aux_seed"]):
        strength = 0.2 * aux_rng(seed, "offset").random()                 # kohya: rand(1) * noise_offset
        strength = np.maximum(strength + adaptive * means[k], 0.0)        # + scale * |latent mean|, clamp 0
        expected = batch["noise"][k] + np.reshape(strength, (-1, 1, 1)) * batch["offset_noise"][k].astype(np.float64)
        np.testing.assert_allclose(got.target[k], expected, rtol=1e-6, atol=1e-7)
    if adaptive < 0:                                # the clamp is reached: some channels get no offset
        assert (np.maximum(0.2 + adaptive * means, 0) == 0).any()
    if adaptive:
        with pytest.raises(ValueError, match="latents"):
            compose_noise(batch, settings)
    fixed = compose_noise(batch, NoiseSettings(noise_offset=0.2))    # the plain offset, as before
    np.testing.assert_allclose(fixed.target, batch["noise"] + 0.2 * batch["offset_noise"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- input perturbation
@pytest.mark.parametrize("random_strength", [False, True])
def test_ip_noise_perturbs_only_the_input(random_strength):
    batch = _batch(n=3)
    got = compose_noise(batch, NoiseSettings(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=random_strength))
    np.testing.assert_array_equal(got.target, batch["noise"])             # the target keeps the drawn noise
    for k, seed in enumerate(batch["aux_seed"]):
        rng = aux_rng(seed, "ip")
        gamma = 0.1 * (rng.random() if random_strength else 1.0)
        expected = batch["noise"][k].astype(np.float64) + gamma * rng.standard_normal(batch["noise"].shape[1:])
        np.testing.assert_allclose(got.input[k], expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- timestep range
class _Draws(ImageCaptionDataset):
    def __init__(self):        # draws() needs only the caption settings
        self.drop_text_prob, self.caption_options = 0.0, None


def test_timesteps_are_drawn_from_min_to_max_and_the_default_is_unchanged():
    ds = _Draws()
    shape = (4, 2, 2)
    t = [int(ds.draws(np.random.default_rng([7, k]), "x", (200, 300), shape)["t"]) for k in range(3000)]
    assert min(t) == 200 and max(t) == 299 and abs(np.mean(t) - 249.5) < 2.5
    for k in range(20):             # (0, T) draws exactly what T drew (and every other draw is the same)
        a = ds.draws(np.random.default_rng([3, k]), "x", 1000, shape)
        b = ds.draws(np.random.default_rng([3, k]), "x", (0, 1000), shape)
        for key in ("t", "noise", "offset_noise", "vae_noise", "aux_seed"):
            np.testing.assert_array_equal(a[key], b[key])
    cfg = type("Cfg", (), dict(min_timestep=0, max_timestep=None))()
    assert timestep_range(cfg, 1000) == (0, 1000)
    cfg.min_timestep, cfg.max_timestep = 10, 20
    assert timestep_range(cfg, 1000) == (10, 20)


# ---------------------------------------------------------------- Huber thresholds and loss weights
def test_huber_threshold_schedules_are_kohyas():
    sched = NoiseSchedule()
    t = np.array([0, 1, 250, 500, 999])
    abar = _hand_abar()[t]
    c, scale = 0.1, 1.7
    np.testing.assert_allclose(huber_threshold(sched, t, "constant", c, scale), np.full(5, c * scale))
    alpha = -math.log(c) / 1000
    np.testing.assert_allclose(huber_threshold(sched, t, "exponential", c, scale), np.exp(-alpha * t) * scale,
                               rtol=1e-12)
    sigmas = ((1.0 - abar) / abar) ** 0.5
    np.testing.assert_allclose(huber_threshold(sched, t, "snr", c, scale), (1 - c) / (1 + sigmas) ** 2 + c,
                               rtol=1e-9)
    zero = huber_threshold(NoiseSchedule(rescale_zero_snr=True), np.array([999]), "snr", c, scale)
    assert zero[0] == pytest.approx(c)                                   # sigma = inf at zero SNR
    terms = timestep_terms(sched, t, "v", loss_type="smooth_l1", huber_schedule="exponential", huber_c=c,
                           huber_scale=scale)
    np.testing.assert_allclose(terms.huber_c, np.exp(-alpha * t) * scale, rtol=1e-6)
    assert (timestep_terms(sched, t, "v").huber_c == 1).all()            # l2: not used


@pytest.mark.parametrize("kind", ["v", "eps"])
def test_v_pred_weights_are_kohyas_and_multiply_with_min_snr_and_debiased(kind):
    sched = NoiseSchedule()
    t = np.array([0, 5, 300, 700, 999])
    snr = _hand_abar()[t] / (1 - _hand_abar()[t])
    clipped = np.minimum(snr, 1000)
    scale = clipped / (clipped + 1)                  # kohya's get_snr_scale
    if kind == "v":
        alone = timestep_terms(sched, t, kind, scale_v_pred_loss_like_noise_pred=True).weight
        np.testing.assert_allclose(alone, scale, rtol=1e-6)
        min_snr, debiased = np.minimum(snr, 5) / (snr + 1), 1 / (clipped + 1)
        both = timestep_terms(sched, t, kind, 5.0, True, scale_v_pred_loss_like_noise_pred=True).weight
    else:
        alone = timestep_terms(sched, t, kind, v_pred_like_loss=0.3).weight
        np.testing.assert_allclose(alone, 1 + 0.3 / scale, rtol=1e-6)   # loss + loss / scale * k
        min_snr, debiased = np.minimum(snr, 5) / snr, 1 / np.sqrt(clipped)
        both = timestep_terms(sched, t, kind, 5.0, True, v_pred_like_loss=0.3).weight
    np.testing.assert_allclose(both, alone * min_snr * debiased, rtol=1e-6)
    with pytest.raises(ValueError):
        timestep_terms(sched, t, kind, **({"v_pred_like_loss": 0.3} if kind == "v" else
                                          {"scale_v_pred_loss_like_noise_pred": True}))


# ---------------------------------------------------------------- the objective in the graph
@pytest.mark.parametrize("loss_type", ["l2", "l1", "huber", "smooth_l1"])
def test_objective_uses_input_noise_for_x_t_and_the_loss_type(loss_type):
    rng = np.random.default_rng(11)
    x0, noise, out = (rng.standard_normal((3, 4, 3, 3)).astype(np.float32) for _ in range(3))
    input_noise = (noise + 0.1 * rng.standard_normal(noise.shape)).astype(np.float32)
    t = np.array([10, 500, 990], np.int32)
    abar = _hand_abar()[t]
    huber_c = np.array([0.1, 0.5, 1000.0], np.float32)      # the last: c >> |d|, where float32 cancellation bites
    weight = np.array([1.0, 0.5, 2.0], np.float32)
    model = FixedOutputModel(out)
    loss, per_sample = DiffusionObjective(model, "v", loss_type=loss_type)(
        Tensor(x0), Tensor(np.zeros((3, 77, 8), np.float32)), Tensor(t), Tensor(noise), Tensor(input_noise),
        Tensor(abar.astype(np.float32)), Tensor(huber_c), Tensor(weight))
    a = abar[:, None, None, None]
    np.testing.assert_allclose(model.seen_x_t.asnumpy(), np.sqrt(a) * x0 + np.sqrt(1 - a) * input_noise, atol=1e-6)
    d = out.astype(np.float64) - (np.sqrt(a) * noise - np.sqrt(1 - a) * x0)     # v target of the drawn noise
    c = huber_c.astype(np.float64)[:, None, None, None]
    elementwise = {"l2": d ** 2, "l1": np.abs(d), "huber": 2 * c * (np.sqrt(d ** 2 + c ** 2) - c),
                   "smooth_l1": 2 * (np.sqrt(d ** 2 + c ** 2) - c)}[loss_type]
    expected = elementwise.mean(axis=(1, 2, 3)) * weight
    np.testing.assert_allclose(per_sample.asnumpy(), expected, rtol=2e-5, atol=1e-9)
    assert float(loss.asnumpy()) == pytest.approx(expected.mean(), rel=2e-5)


# ---------------------------------------------------------------- the three training CLIs with every option on
KOHYA_FLAGS = ["--noise_offset", "0.05", "--noise_offset_random_strength", "True", "--adaptive_noise_scale", "0.02",
               "--multires_noise_iterations", "4", "--multires_noise_discount", "0.4", "--ip_noise_gamma", "0.1",
               "--ip_noise_gamma_random_strength", "True", "--min_timestep", "100", "--max_timestep", "900",
               "--huber_c", "0.2", "--huber_scale", "1.5"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("kohya_shapes"), num_train=4, size=32)


def test_text_to_image_run_with_every_option(shapes, tmp_path):
    """train_text_to_image.py's run (v stand-in, latent cache, compiled step) with all the options at once:
    the loss is finite, the weights move, t stays in range, args.yaml holds every value."""
    from ldm.train.config import parse_config
    from ldm.train.loop import TrainRun
    out = tmp_path / "out"
    flags = KOHYA_FLAGS + ["--loss_type", "huber", "--huber_schedule", "snr", "--scale_v_pred_loss_like_noise_pred",
                           "True", "--snr_gamma", "5", "--debiased_estimation_loss", "True"]
    cfg = parse_config(["--model_config", write_standin_config(tmp_path), "--data_path", shapes,
                        "--output_path", str(out), "--image_size", "32", "--train_batch_size", "2", "--max_steps", "2",
                        "--cache_latents", "True", "--start_learning_rate", "1e-3", "--show_progress", "False",
                        "--seed", "5"] + flags)
    run = TrainRun(cfg)
    batch, noise, terms = run.host_batch(0, 0)
    assert noise is None                                 # adaptive_noise_scale: made from the encoded latents
    inputs = run.device_inputs(batch, noise, terms)
    assert not np.array_equal(inputs.noise.asnumpy(), inputs.input_noise.asnumpy())
    assert ((batch["t"] >= 100) & (batch["t"] < 900)).all()
    before = [p.asnumpy().copy() for p in run.trainable]
    summary = run.run()
    assert summary["global_step"] == 2 and math.isfinite(summary["last_loss"])
    assert any(not np.array_equal(b, p.asnumpy()) for b, p in zip(before, run.trainable))
    saved = yaml.safe_load(open(out / "args.yaml", encoding="utf-8"))
    for name, value in zip(flags[::2], flags[1::2]):
        assert str(saved[name[2:]]) == value or saved[name[2:]] == yaml.safe_load(value), name


def test_dreambooth_and_textual_inversion_batches_with_the_options(shapes, tmp_path):
    """DreamBooth (eps stand-in, class partners) and textual inversion (tiny SD 2.x eps model): their host
    batches draw t in range and every row its own noise; the objective (smooth_l1, v_pred_like_loss) is finite."""
    from PIL import Image
    from ldm.train import dreambooth, textual_inversion
    flags = KOHYA_FLAGS + ["--loss_type", "smooth_l1", "--huber_schedule", "exponential", "--v_pred_like_loss", "0.2",
                           "--mode", "1", "--show_progress", "False", "--image_size", "32", "--max_steps", "4"]
    classes = tmp_path / "classes"
    classes.mkdir()
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * k, np.uint8)).save(classes / f"{k:05d}.png")
    db = dreambooth.parse_config(["--model_config", write_standin_config(tmp_path), "--pretrained_model_path", "",
                                  "--instance_data_dir", shapes, "--instance_prompt", "a sks shape",
                                  "--class_data_dir", str(classes), "--class_prompt", "a shape",
                                  "--num_class_images", "2", "--prediction_type", "eps", "--train_batch_size", "2",
                                  "--output_path", str(tmp_path / "db")] + flags)
    ti = textual_inversion.parse_config(["--model_config", os.path.join(REPO, "configs", "tiny-v2.yaml"),
                                         "--pretrained_model_path", "", "--train_data_dir", shapes,
                                         "--placeholder_token", "<shape>", "--image_filter_size", "16",
                                         "--gradient_accumulation_steps", "1", "--train_batch_size", "2",
                                         "--output_path", str(tmp_path / "ti")] + flags)
    for run, rows in ((dreambooth.DreamBoothRun(db), 4), (textual_inversion.TextualInversionRun(ti), 2)):
        assert run.prediction_type == "eps" and run.objective.loss_type == "smooth_l1"
        batch, noise, terms = run.host_batch(0, 0)
        assert len(batch["t"]) == rows and ((batch["t"] >= 100) & (batch["t"] < 900)).all()
        assert len(set(batch["aux_seed"].tolist())) == rows           # class rows draw their own noise
        inputs = run.device_inputs(batch, noise, terms)
        np.testing.assert_allclose(inputs.huber_c.asnumpy(), 1.5 * 0.2 ** (batch["t"] / 1000), rtol=1e-5)
        loss, per_sample = run.objective(*inputs)
        assert np.isfinite(per_sample.asnumpy()).all() and float(loss.asnumpy()) > 0
