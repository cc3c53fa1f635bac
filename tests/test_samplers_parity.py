"""Every sampler, step for step, against the diffusers scheduler of the same family.

The fixtures (tests/fixtures/make_sampler_fixtures.py) hold, per case, what diffusers passed to the
model at each call, the model outputs, the latents after each step and the noise it drew. We feed the
same outputs and noise to our sampler and require the same model inputs, timesteps and latents.

Tolerance 1e-5, relative to max(1, |latent|) because the k-diffusion samplers carry latents scaled by
sigma (up to ~4096 with zero terminal SNR). diffusers accumulates alphas_cumprod in float32 (relative
error ~1e-6 against our float64); the strict comparison therefore builds our sampler on diffusers'
alphas_cumprod, and a second test runs on our own float64 schedule with a 1e-4 bound.
One exception: Euler / Euler ancestral with zero terminal SNR start at sigma = 4096 (latent ~1.6e4), and
float32 cancellation in the first step leaves diffusers' own result with ~2e-5 error; those two cases
use 5e-5 (FLOAT32_FLOOR_TOL).
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.diffusion.samplers import SAMPLER_NAMES, get_sampler
from ldm.diffusion.schedule import NoiseSchedule

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "samplers")


def _load(name):
    return np.load(os.path.join(HERE, f"{name}.npz"))


# the mindone_* samplers follow MindONE's code, not diffusers' (tests/test_samplers_mindone_*.py)
DIFFUSERS_FAMILY = [name for name in SAMPLER_NAMES if not name.startswith("mindone_")]


def _cases():
    out = []
    for name in DIFFUSERS_FAMILY:
        data = _load(name)
        k = 0
        while f"case{k:02d}_config" in data:
            cfg = json.loads(str(data[f"case{k:02d}_config"]))
            tag = "-".join(f"{a}={b}" for a, b in cfg.items() if a != "name")
            out.append(pytest.param(name, k, id=f"{name}-{k:02d}-{tag}"))
            k += 1
    return out


CASES = _cases()


def _reference_schedule(zero):
    ref = np.load(os.path.join(HERE, "schedules.npz"))
    return NoiseSchedule.from_alphas_cumprod(ref[f"scaled_linear_{int(zero)}_alphas_cumprod"])


def _run(name, k, schedule="reference", to_tensor=None):
    data = _load(name)
    case = {key[len(f"case{k:02d}_"):]: data[key] for key in data.files if key.startswith(f"case{k:02d}_")}
    cfg = json.loads(str(case["config"]))
    cfg.pop("name")
    steps, invert = cfg.pop("steps"), cfg.pop("invert", False)
    if schedule == "reference":
        cfg["schedule"] = _reference_schedule(cfg.pop("rescale_zero_snr", False))
    sampler = get_sampler(name, **cfg)
    conv = to_tensor or (lambda a: a)
    outputs = [conv(o) for o in case["model_out"]]
    noises = [conv(n) for n in case["noise"]]
    seen_x, seen_t, latents = [], [], []

    def denoise(x, t):
        seen_x.append(x)
        seen_t.append(t)
        return outputs[len(seen_x) - 1]

    def record(i, t, x, pred_x0):
        latents.append(x)

    if invert:
        final = sampler.invert(denoise, conv(case["x_T"]), steps, callback=record)
    else:
        final = sampler.sample(denoise, conv(case["x_T"]), steps, callback=record,
                               noise_fn=lambda like: noises.pop(0))
    assert not noises, "sampler drew less noise than diffusers"
    as_np = (lambda a: a.asnumpy()) if to_tensor else (lambda a: a)
    return sampler, case, np.array(seen_t), [as_np(a) for a in seen_x], [as_np(a) for a in latents], as_np(final)


def _scaled_err(ours, ref):
    return np.abs(ours - ref).max() / max(1.0, np.abs(ref).max())


FLOAT32_FLOOR_TOL = 5e-5


def _check(case, ts, xs, latents, final, sampler, tol, t_tol=1e-3):
    assert len(ts) == len(case["timesteps"]), "number of model calls differs"
    if sampler.integer_timesteps and not sampler.options.get("use_karras_sigmas"):
        np.testing.assert_array_equal(ts, case["timesteps"])
    else:   # fractional t (k-diffusion linspace, Karras sigma -> t)
        np.testing.assert_allclose(ts, case["timesteps"], rtol=0, atol=t_tol)
    if sampler.init_noise_sigma > 100:
        tol = max(tol, FLOAT32_FLOOR_TOL)
    if "init_noise_sigma" in case:
        assert sampler.init_noise_sigma == pytest.approx(float(case["init_noise_sigma"]), rel=1e-5)
    for i, (ours, ref) in enumerate(zip(xs, case["model_in"])):
        assert _scaled_err(ours, ref) <= tol, f"model input {i}: {_scaled_err(ours, ref):.2e}"
    for i, (ours, ref) in enumerate(zip(latents, case["samples"])):
        assert _scaled_err(ours, ref) <= tol, f"latent after call {i}: {_scaled_err(ours, ref):.2e}"
    np.testing.assert_array_equal(final, latents[-1])


@pytest.mark.parametrize("name,k", CASES)
def test_parity_with_diffusers(name, k):
    sampler, case, ts, xs, latents, final = _run(name, k)
    _check(case, ts, xs, latents, final, sampler, 1e-5)


@pytest.mark.parametrize("name,k", CASES)
def test_parity_own_float64_schedule(name, k):
    sampler, case, ts, xs, latents, final = _run(name, k, schedule="own")
    _check(case, ts, xs, latents, final, sampler, 1e-4, t_tol=5e-3)


# first two cases (eps and v) of every sampler, and DDIM's eta / clip / dynamic-thresholding cases
MS_CASES = [(name, k) for name in DIFFUSERS_FAMILY for k in (0, 1)] + [("ddim", 8), ("ddim", 10), ("ddim", 11)]


@pytest.mark.parametrize("name,k", MS_CASES)
def test_parity_with_mindspore_tensors(name, k):
    """Same step math on MindSpore Tensors (what the pipeline passes)."""
    sampler, case, ts, xs, latents, final = _run(name, k, to_tensor=ms.Tensor)
    _check(case, ts, xs, latents, final, sampler, 1e-5)
