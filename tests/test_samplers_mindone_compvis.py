"""mindone_ddim / mindone_plms, step for step, against the LDM samplers that MindONE ported.

tests/fixtures/make_compvis_sampler_fixtures.py ran the original ldm/models/diffusion/ddim.py and plms.py
(stable-diffusion-sdkit 2.1.5 on PyPI, under PyTorch in float64) on the exact denoiser of Gaussian data
and stored, per case, the timestep and latent of every model call, each step's predicted x0, the noise
drawn and the final latent. Here the same analytic model drives our samplers (numpy float64 and MindSpore
float32); errors are relative to max(1, |latent|). Cases: eps and v, eta 0 and 1 (injected noise), step
counts that divide 1000 and that do not (15 -> 16 steps, 7 -> 8), "quad", zero terminal SNR, guidance.

The end-to-end test runs the tiny converted pipeline with ``sampler="mindone_ddim"`` / ``"mindone_plms"``
against a plain float64 numpy transcription of LDM's loops (below, checked against the fixture first)
that drives the same MindSpore model with MindONE's ``unconditional_guidance_scale`` mix.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.diffusion.analytic import GaussianData
from ldm.diffusion.base import NoiseSource
from ldm.diffusion.compvis import ldm_timesteps
from ldm.diffusion.guidance import cfg_denoiser
from ldm.diffusion.samplers import get_sampler
from ldm.diffusion.spec import DiffusionSpec

REF = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "samplers", "compvis.npz"))
TOL = 1e-5


def _config(k):
    return json.loads(str(REF[f"case{k:02d}_config"]))


def _case(k):
    return {key[7:]: REF[key] for key in REF.files if key.startswith(f"case{k:02d}_")}


CASES = [pytest.param(k, id="-".join(f"{a}={b}" for a, b in _config(k).items()))
         for k in range(100) if f"case{k:02d}_config" in REF]


def _sampler(cfg):
    opts = dict(prediction_type=cfg["prediction_type"], rescale_zero_snr=cfg["rescale_zero_snr"],
                ddim_discretize=cfg["ddim_discretize"])
    if cfg["eta"]:
        opts["eta"] = cfg["eta"]
    return get_sampler("mindone_" + cfg["sampler"], **opts)


def _analytic_denoiser(cfg, abar, to_tensor=None):
    """denoise(x, t): the exact model (eps or v) at level abar[t]; guided cases add c * direction per
    half and mix [uncond; cond] with our guidance (what the pipeline does)."""
    data = GaussianData(REF["mu"], REF["std"], np.zeros(len(abar)))
    as_np = (lambda a: a.asnumpy().astype(np.float64)) if to_tensor else (lambda a: a)
    back = to_tensor or (lambda a: a)

    def model(x, t, context=None):
        x_np = as_np(x)
        out = data.optimal_output(x_np, abar[int(t)], cfg["prediction_type"])
        if context is not None:
            out = out + as_np(context).reshape(-1, 1, 1, 1) * REF["guide_direction"]
        return back(out)

    if not cfg["guided"]:
        return model
    n = REF["case00_x_T"].shape[0]
    cond, uncond = (back(np.full((n, 1), float(REF[key]))) for key in ("cond", "uncond"))
    return cfg_denoiser(model, cond, uncond, float(REF["scale"]))


def _drive(k, to_tensor=None):
    """Run our sampler on case k -> (call timesteps, call inputs, pred_x0 per call, final latent, sampler)."""
    cfg, case = _config(k), _case(k)
    sampler = _sampler(cfg)
    noises = [n for n in case["noise"]]
    conv = to_tensor or (lambda a: a)
    denoise = _analytic_denoiser(cfg, sampler.schedule.alphas_cumprod, to_tensor)
    seen_t, seen_x, pred_x0 = [], [], []

    def record_call(x, t):
        seen_t.append(t)
        seen_x.append(x)
        return denoise(x, t)

    def noise_fn(like):
        assert cfg["eta"] > 0, "a deterministic sampler drew noise"
        return conv(noises.pop(0))

    final = sampler.sample(record_call, conv(case["x_T"]), cfg["steps"], noise_fn=noise_fn,
                           callback=lambda i, t, x, x0: pred_x0.append(x0))
    assert not noises, "our sampler drew less noise than LDM"
    as_np = (lambda a: a.asnumpy()) if to_tensor else (lambda a: a)
    return np.array(seen_t), [as_np(a) for a in seen_x], [as_np(a) for a in pred_x0], as_np(final), sampler


def _err(ours, ref):
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / max(1.0, np.abs(ref).max()))


def _max_errors(k, to_tensor=None):
    """Largest relative error over model inputs, predicted x0 and the final latent of case k."""
    cfg, case = _config(k), _case(k)
    ts, xs, x0s, final, sampler = _drive(k, to_tensor)
    np.testing.assert_array_equal(ts, case["timesteps"])
    # PLMS reports a step's x0 after the warm-up's second call, LDM once per step
    x0s = x0s[1:] if cfg["sampler"] == "plms" else x0s
    assert len(x0s) == len(case["pred_x0"])
    return (max(_err(a, b) for a, b in zip(xs, case["model_in"])),
            max(_err(a, b) for a, b in zip(x0s, case["pred_x0"])), _err(final, case["final"]))


@pytest.mark.parametrize("k", CASES)
def test_step_for_step_with_ldm(k):
    errors = _max_errors(k)
    assert max(errors) <= TOL, f"model inputs / pred_x0 / final: {errors}"


@pytest.mark.parametrize("k", [0, 4, 8, 12, 16, 20, 29, 31])
def test_step_for_step_with_mindspore_tensors(k):
    """The same step math on float32 MindSpore Tensors (what the pipeline passes)."""
    errors = _max_errors(k, to_tensor=lambda a: ms.Tensor(np.asarray(a, np.float32)))
    assert max(errors) <= TOL, f"model inputs / pred_x0 / final: {errors}"


def test_timesteps_as_ldm_lays_them():
    """uniform = range(0, T, T // n) + 1: 16 steps for n=15, 8 for n=7; PLMS calls the second one twice."""
    ddim, plms = get_sampler("mindone_ddim"), get_sampler("mindone_plms")
    for n, count in ((15, 16), (7, 8), (20, 20), (50, 50), (1, 1)):
        c = 1000 // n
        expected = np.arange(0, 1000, c)[::-1] + 1
        assert len(expected) == count
        np.testing.assert_array_equal(ddim.set_timesteps(n).timesteps, expected)
        calls = plms.set_timesteps(n).timesteps
        assert len(calls) == count + 1 and calls[1] == expected[min(1, count - 1)]
        np.testing.assert_array_equal(np.delete(calls, 1), expected)
        assert ddim.final_alpha_cumprod == plms.final_alpha_cumprod == ddim.schedule.alphas_cumprod[0]
    quad = ldm_timesteps("quad", 20)
    np.testing.assert_array_equal(quad, (np.linspace(0, np.sqrt(800), 20) ** 2).astype(int) + 1)
    for k in (0, 1, 2, 3, 24):           # the fixture's recorded calls agree
        np.testing.assert_array_equal(REF[f"case{k:02d}_timesteps"], _drive(k)[4].timesteps)


def test_schedule_is_the_model_spec():
    """The sampler reads the spec's alphas_cumprod; LDM's own float64 schedule (and Lin et al.'s rescale)
    agrees with it to rounding."""
    for k in (0, 26):
        ref, zero = REF[f"case{k:02d}_alphas_cumprod"], _config(k)["rescale_zero_snr"]
        spec = DiffusionSpec(prediction_type="v", rescale_zero_snr=zero)
        sampler = get_sampler("mindone_ddim", spec=spec)
        assert sampler.schedule is spec.schedule
        np.testing.assert_allclose(sampler.schedule.alphas_cumprod, ref, rtol=1e-12, atol=1e-15)


def test_equals_diffusers_ddim_only_when_steps_divide_1000():
    def run(name, n, pred="eps"):
        s = get_sampler(name, prediction_type=pred)
        data = GaussianData(REF["mu"], REF["std"], s._train_sigmas())
        return s.sample(data.model(pred, dtype=None), REF["case00_x_T"], n)

    np.testing.assert_allclose(run("mindone_ddim", 20), run("ddim", 20), atol=1e-12)
    np.testing.assert_allclose(run("mindone_ddim", 50, "v"), run("ddim", 50, "v"), atol=1e-12)
    assert np.abs(run("mindone_ddim", 15) - run("ddim", 15)).max() > 1e-3


def test_zero_snr_keeps_mindone_timesteps():
    """MindONE's DDIM has no spacing option: with a zero-terminal-SNR spec it still starts at 981 (n=50)
    where ddim switches to trailing (999); timestep_spacing is refused rather than ignored."""
    spec = DiffusionSpec(prediction_type="v", rescale_zero_snr=True)
    ours = get_sampler("mindone_ddim", spec=spec).set_timesteps(50)
    assert ours.timestep_spacing == "uniform" and ours.timesteps[0] == 981
    assert get_sampler("ddim", spec=spec).set_timesteps(50).timesteps[0] == 999
    with pytest.raises(ValueError, match="ddim_discretize"):
        get_sampler("mindone_ddim", timestep_spacing="trailing")
    # 400 steps reach t = 999, where abar = 0: fine for v with DDIM, refused for eps and for PLMS
    v400 = get_sampler("mindone_ddim", spec=spec).set_timesteps(400)
    assert v400.timesteps[0] == 999
    with pytest.raises(ValueError, match="zero SNR"):
        get_sampler("mindone_ddim", spec=spec.replace(prediction_type="eps")).set_timesteps(400)
    with pytest.raises(ValueError, match="divides by alphas_cumprod"):
        get_sampler("mindone_plms", spec=spec).set_timesteps(400)


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="use e.g. 8 or 10 steps"):
        get_sampler("mindone_ddim").set_timesteps(9)          # 1000 // 9 = 111 divides 999: t = 1000
    with pytest.raises(ValueError, match="eta must be 0"):
        get_sampler("mindone_plms", eta=0.5).set_timesteps(10)
    with pytest.raises(ValueError, match="ddim_discretize"):
        get_sampler("mindone_ddim", ddim_discretize="cosine").set_timesteps(10)
    with pytest.raises(ValueError, match="steps_offset"):
        get_sampler("mindone_ddim", steps_offset=0)
    assert get_sampler("mindone_ddim", eta=1.0).stochastic and not get_sampler("mindone_plms").stochastic


def test_plms_started_part_way():
    """img2img starts at call k: with no history PLMS takes a first-order step (= mindone_ddim's), and
    at the warm-up's second call the latent (already at that level) passes through."""
    plms, ddim = get_sampler("mindone_plms", prediction_type="v"), get_sampler("mindone_ddim", prediction_type="v")
    plms.set_timesteps(10)
    ddim.set_timesteps(10)
    data = GaussianData(REF["mu"], REF["std"], plms._train_sigmas())
    model = data.model("v", dtype=None)
    x = REF["case00_x_T"]
    first = next(plms.iterate(model, x, start=4))[0]
    np.testing.assert_allclose(first, next(ddim.iterate(model, x, start=3))[0], atol=1e-12)
    np.testing.assert_array_equal(next(plms.iterate(model, x, start=1))[0], x)
    assert np.isfinite(list(plms.iterate(model, x, start=4))[-1][0]).all()


# ---------------------------------------------------------------- LDM's loops, transcribed (float64 numpy)
def ldm_ddim(model_out, x, abar, n, eta=0.0, v=False, noise=None):
    """LDM DDIMSampler.sample: make_ddim_timesteps('uniform') / make_ddim_sampling_parameters / p_sample_ddim."""
    ts = np.asarray(list(range(0, len(abar), len(abar) // n))) + 1
    alphas = abar[ts]
    alphas_prev = np.asarray([abar[0]] + abar[ts[:-1]].tolist())
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    for i, step in enumerate(np.flip(ts)):
        index = len(ts) - i - 1
        out = model_out(x, step)
        a_t, a_prev, sigma_t = alphas[index], alphas_prev[index], sigmas[index]
        e_t = np.sqrt(abar[step]) * out + np.sqrt(1 - abar[step]) * x if v else out
        pred_x0 = np.sqrt(abar[step]) * x - np.sqrt(1 - abar[step]) * out if v else \
            (x - np.sqrt(1 - a_t) * e_t) / np.sqrt(a_t)
        x = np.sqrt(a_prev) * pred_x0 + np.sqrt(1 - a_prev - sigma_t ** 2) * e_t + \
            (sigma_t * noise(x) if eta else 0.0)
    return x


def ldm_plms(model_out, x, abar, n, v=False):
    """LDM PLMSSampler.sample (eta 0); a v output is turned into eps at its own call (DDIM's helper)."""
    ts = np.asarray(list(range(0, len(abar), len(abar) // n))) + 1
    alphas, alphas_prev = abar[ts], np.asarray([abar[0]] + abar[ts[:-1]].tolist())
    time_range = np.flip(ts)

    def eps_at(x_in, t):
        out = model_out(x_in, t)
        return np.sqrt(abar[t]) * out + np.sqrt(1 - abar[t]) * x_in if v else out

    def x_prev_and_x0(x_cur, e_t, index):
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x_cur - np.sqrt(1 - a_t) * e_t) / np.sqrt(a_t)
        return np.sqrt(a_prev) * pred_x0 + np.sqrt(1 - a_prev) * e_t, pred_x0

    old_eps = []
    for i, step in enumerate(time_range):
        index, t_next = len(ts) - i - 1, time_range[min(i + 1, len(time_range) - 1)]
        e_t = eps_at(x, step)
        if not old_eps:
            x_p, _ = x_prev_and_x0(x, e_t, index)
            e_prime = (e_t + eps_at(x_p, t_next)) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, _ = x_prev_and_x0(x, e_prime, index)
        old_eps = (old_eps + [e_t])[-3:]
    return x


@pytest.mark.parametrize("k", [0, 7, 12, 19, 20, 11])
def test_transcription_matches_the_fixture(k):
    """The numpy loops used by the end-to-end test reproduce the original code's result."""
    cfg, case = _config(k), _case(k)
    abar = get_sampler("mindone_ddim").schedule.alphas_cumprod
    model = _analytic_denoiser(cfg, abar)
    noises = list(case["noise"])
    if cfg["sampler"] == "ddim":
        got = ldm_ddim(model, case["x_T"], abar, cfg["steps"], cfg["eta"], cfg["prediction_type"] == "v",
                       noise=lambda like: noises.pop(0))
    else:
        got = ldm_plms(model, case["x_T"], abar, cfg["steps"], cfg["prediction_type"] == "v")
    assert _err(got, case["final"]) <= 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("name,eta", [("mindone_ddim", 0.0), ("mindone_ddim", 1.0), ("mindone_plms", 0.0)])
def test_pipeline_equals_ldm_loop(name, eta):
    """Tiny SD2 v pipeline, 7 steps (8 LDM steps), guidance 5: our pipeline vs the LDM loop on its model."""
    from pipeline_models import pipeline
    pipe = pipeline("sd2", "v")
    prompt, negative, seeds, scale = "a red circle", "blurry", [3, 4], 5.0
    noise = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    result = pipe.generate(prompt, negative_prompt=negative, width=64, height=64, steps=7, sampler=name,
                           scale=scale, seeds=seeds, latents=noise, eta=eta)
    context = pipe.encode_prompts([prompt] * 2, [negative] * 2)

    def model_out(x, t):       # MindONE: uncond + scale * (cond - uncond) on the raw (v) output
        x2 = ms.Tensor(np.concatenate([x, x]).astype(np.float32))
        # the pipeline's compiled unguided UNet call on [x; x] (eager PyNative takes ~1.5 s a call here)
        out = pipe._run("plain", x2, ms.Tensor(np.full((4,), t, np.float32)), context).asnumpy()
        return out[:2].astype(np.float64) + scale * (out[2:] - out[:2]).astype(np.float64)

    abar = pipe.spec.schedule.alphas_cumprod
    x_T = noise.astype(np.float64)
    if name == "mindone_ddim":
        source = NoiseSource(seeds)
        ref = ldm_ddim(model_out, x_T, abar, 7, eta, v=True,
                       noise=lambda like: source(like.astype(np.float32)).astype(np.float64))
    else:
        ref = ldm_plms(model_out, x_T, abar, 7, v=True)
    err = _err(result.latents, ref)
    assert err <= 1e-4, f"{name} eta={eta}: final latents differ by {err:.2e} (relative)"
