"""Registry, defaults, guidance, callbacks, noise reproducibility, DDIM inversion, slerp."""
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.diffusion.analytic import GaussianData
from ldm.diffusion.base import NoiseSource
from ldm.diffusion.guidance import apply_guidance, cfg_denoiser
from ldm.diffusion.interpolation import slerp
from ldm.diffusion.samplers import SAMPLER_NAMES, get_sampler

MU = np.array([0.3, -0.5, 0.0, 1.0]).reshape(1, 4, 1, 1)
STD = np.array([0.8, 1.0, 0.6, 1.2]).reshape(1, 4, 1, 1)


def test_registry_names_and_defaults():
    assert {"mindone_ddim", "mindone_plms"} <= set(SAMPLER_NAMES)
    diffusers_family = {n for n in SAMPLER_NAMES if not n.startswith("mindone_")}
    assert diffusers_family == {"ddpm", "ddim", "plms", "dpm_solver", "dpm_solver_3m", "dpm_solver_sde",
                                "dpm_solver_single", "uni_pc", "euler", "euler_a", "heun", "lms"}
    for name in ("ddpm", "ddim", "plms"):
        s = get_sampler(name)
        assert s.timestep_spacing == "leading" and s.steps_offset == 1
    ddim = get_sampler("ddim")
    assert ddim.clip_sample is False and ddim.set_alpha_to_one is False and ddim.eta == 0.0
    for name in ("dpm_solver", "dpm_solver_3m", "dpm_solver_sde", "dpm_solver_single", "uni_pc",
                 "euler", "euler_a", "heun", "lms"):
        assert get_sampler(name).timestep_spacing == "linspace"
    dpm = get_sampler("dpm_solver")
    assert (dpm.solver_order, dpm.algorithm_type, dpm.lower_order_final, dpm.use_karras_sigmas) == \
        (2, "dpmsolver++", True, False)
    assert get_sampler("dpm_solver_3m").solver_order == 3
    assert get_sampler("dpm_solver_sde").algorithm_type == "sde-dpmsolver++"
    uni = get_sampler("uni_pc")
    assert (uni.solver_type, uni.solver_order) == ("bh2", 2)
    assert get_sampler("uni_pc", order=3).solver_order == 3
    assert get_sampler("lms", order=3).order == 3
    cfg = get_sampler("euler", prediction_type="velocity", timestep_spacing="trailing",
                      use_karras_sigmas=True, rescale_zero_snr=True).config
    assert (cfg["prediction_type"], cfg["timestep_spacing"], cfg["use_karras_sigmas"], cfg["rescale_zero_snr"]) == \
        ("v", "trailing", True, True)


def test_bad_names_and_options_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"):
        get_sampler("dpm++")
    with pytest.raises(ValueError, match="known:"):
        get_sampler("ddim", solver_order=2)
    with pytest.raises(ValueError, match="call set_timesteps"):
        get_sampler("ddim").sample(lambda x, t: x, np.zeros((1, 4, 2, 2)))


def test_guidance_matches_diffusers(fixtures_dir):
    ref = np.load(os.path.join(fixtures_dir, "samplers", "guidance.npz"))
    for scale, phi in ((7.5, 0.0), (7.5, 0.7), (3.0, 1.0)):
        got = apply_guidance(ref["uncond"], ref["cond"], scale, phi)
        np.testing.assert_allclose(got, ref[f"guided_{scale}_{phi}"], atol=1e-5)
        got_ms = apply_guidance(ms.Tensor(ref["uncond"]), ms.Tensor(ref["cond"]), scale, phi)
        np.testing.assert_allclose(got_ms.asnumpy(), ref[f"guided_{scale}_{phi}"], atol=1e-5)


def test_cfg_denoiser_batches_uncond_then_cond():
    calls = []

    def model(x, t, ctx):
        calls.append((x.shape[0], ctx.copy()))
        return x * 0 + ctx[:, :1, None, None]          # output = first context value per sample

    x = np.ones((2, 4, 2, 2), np.float32)
    cond, uncond = np.full((2, 3), 2.0, np.float32), np.zeros((2, 3), np.float32)
    out = cfg_denoiser(model, cond, uncond, scale=5.0)(x, 10.0)
    assert calls[0][0] == 4 and np.all(calls[0][1][:2] == 0) and np.all(calls[0][1][2:] == 2)
    np.testing.assert_allclose(out, 10.0)               # 0 + 5 (2 - 0)
    out1 = cfg_denoiser(model, cond, uncond, scale=1.0)(x, 10.0)
    assert calls[-1][0] == 2 and np.allclose(out1, 2.0)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_sees_every_call_and_final_pred_x0(name):
    """callback(i, t, x, pred_x0) after each model call; a last step to sigma = 0 lands on pred_x0."""
    sampler = get_sampler(name, prediction_type="v")
    data = GaussianData(MU, STD, sampler._train_sigmas())
    seen = []
    x = sampler.sample(data.model("v"), np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32),
                       8, callback=lambda i, t, x, x0: seen.append((i, t, x, x0)), seed=0)
    assert [s[0] for s in seen] == list(range(len(sampler.timesteps)))
    assert [s[1] for s in seen] == [float(t) for t in sampler.timesteps]
    assert seen[-1][2] is x
    if sampler.final_alpha_cumprod == 1.0 and seen[-1][3] is not None and name not in ("ddpm", "lms"):
        np.testing.assert_allclose(x, seen[-1][3], atol=1e-5)


@pytest.mark.parametrize("name", ["ddpm", "euler_a", "dpm_solver_sde"])
def test_stochastic_samplers_reproduce_from_seed(name):
    sampler = get_sampler(name)
    data = GaussianData(MU, STD, sampler._train_sigmas())
    x_T = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    a = sampler.sample(data.model("eps"), x_T, 6, seed=7)
    b = sampler.sample(data.model("eps"), x_T, 6, seed=7)
    c = sampler.sample(data.model("eps"), x_T, 6, seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    a_ms = sampler.sample(lambda x, t: ms.Tensor(data.model("eps")(x.asnumpy(), t)), ms.Tensor(x_T), 6, seed=7)
    np.testing.assert_allclose(a_ms.asnumpy(), a, atol=1e-5)


def test_noise_source_matches_library():
    like = ms.Tensor(np.zeros((2, 3), np.float16))
    n = NoiseSource(3)(like)
    assert n.dtype == ms.float16 and n.shape == (2, 3)


@pytest.mark.parametrize("pred,spacing", [("v", "trailing"), ("eps", "leading")])
def test_ddim_inversion_converges_to_exact_encoding(pred, spacing):
    """DDIM inversion (diffusers' DDIMInverseScheduler rule: the model is evaluated at the level being
    moved to) is a first-order method: against the exact ODE encoding its error halves when the number
    of steps doubles, and decoding the code goes back to the start with the same order."""
    errs, round_trip = [], []
    for n in (50, 100, 200):
        sampler = get_sampler("ddim", prediction_type=pred, timestep_spacing=spacing)
        data = GaussianData(MU, STD, sampler._train_sigmas())
        model = data.model(pred, dtype=None)
        x0 = MU + STD * np.random.default_rng(0).standard_normal((64, 4, 1, 1))
        abar = sampler.schedule.alphas_cumprod
        start = data.ode_map(x0, 1.0, abar[0])          # the level DDIM ends on (set_alpha_to_one=False)
        x_T = sampler.invert(model, start, n)
        exact_T = data.ode_map(start, abar[0], abar[int(sampler.inversion_timesteps(n)[-1])])
        errs.append(np.abs(x_T - exact_T).max())
        round_trip.append(np.abs(sampler.sample(model, x_T, n) - start).max())
    assert errs[-1] < 0.05 and round_trip[-1] < 0.1
    for e in (errs, round_trip):
        assert 1.7 < e[0] / e[1] < 2.3 and 1.7 < e[1] / e[2] < 2.3, e


def test_slerp():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 4, 8, 8)), rng.standard_normal((1, 4, 8, 8))
    np.testing.assert_allclose(slerp(a, b, 0.0), a)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-12)
    mid = slerp(a, b, 0.5)
    # great-circle midpoint keeps the norm of equal-norm endpoints (linear interpolation shrinks it)
    b_scaled = b * np.linalg.norm(a) / np.linalg.norm(b)
    assert np.linalg.norm(slerp(a, b_scaled, 0.5)) == pytest.approx(np.linalg.norm(a), rel=1e-9)
    assert np.linalg.norm(mid) > np.linalg.norm(0.5 * (a + b))
    np.testing.assert_allclose(slerp(a, a * 2, 0.5), 1.5 * a)                   # parallel: linear
    np.testing.assert_allclose(slerp(ms.Tensor(a.astype(np.float32)), ms.Tensor(b.astype(np.float32)), 0.3).asnumpy(),
                               slerp(a, b, 0.3), atol=1e-5)


def test_uni_pc_limits_to_sigma_zero_are_finite():
    """diffusers returns NaN for bh1 and for predict_x0=False on a final step to sigma 0; ours is the
    exact limit (the step lands on the x0 prediction)."""
    for opts in (dict(solver_type="bh1"), dict(predict_x0=False)):
        sampler = get_sampler("uni_pc", **opts)
        data = GaussianData(MU, STD, sampler._train_sigmas())
        x = sampler.sample(data.model("eps"), np.random.default_rng(0).standard_normal((4, 4, 1, 1)), 10)
        assert np.isfinite(x).all()
        ref = get_sampler("uni_pc", final_sigmas_type="sigma_min", **opts)
        x_ref = ref.sample(data.model("eps"), np.random.default_rng(0).standard_normal((4, 4, 1, 1)), 10)
        assert np.abs(x - x_ref).max() < 0.05


def test_plms_exact_v_conversion_equals_eps_sampling():
    """With exact_v_conversion, PLMS on the exact v model walks the same path as on the exact eps model
    (diffusers' v handling does not: it converts the combined v with the current latent)."""
    x_T = np.random.default_rng(0).standard_normal((16, 4, 1, 1))
    eps_s = get_sampler("plms", prediction_type="eps")
    data = GaussianData(MU, STD, eps_s._train_sigmas())
    ref = eps_s.sample(data.model("eps", dtype=None), x_T, 10)
    exact = get_sampler("plms", prediction_type="v", exact_v_conversion=True).sample(data.model("v", dtype=None), x_T, 10)
    plain = get_sampler("plms", prediction_type="v").sample(data.model("v", dtype=None), x_T, 10)
    np.testing.assert_allclose(exact, ref, atol=1e-10)
    assert np.abs(plain - ref).max() > 1e-2


@pytest.mark.parametrize("name", ["ddim", "dpm_solver", "euler", "heun"])
def test_noise_level_matches_model_input_scaling(name):
    s = get_sampler(name, use_karras_sigmas=name != "ddim")
    s.set_timesteps(10)
    abar = s.schedule.alphas_cumprod
    for i in range(len(s.timesteps)):
        level = s.noise_level(i)
        if name == "ddim":
            assert level == abar[int(s.timesteps[i])]
        else:   # sigma-space: the latent is x_vp / sqrt(level); dpm: level of sigmas[i]
            assert 0 < level < 1
    if name in ("euler", "heun"):
        np.testing.assert_allclose(s.scale_model_input(np.ones(1), 0) ** 2, s.noise_level(0))


@pytest.mark.parametrize("name", ["ddpm", "ddim", "plms"])
def test_zero_snr_with_eps_model_is_refused(name):
    with pytest.raises(ValueError, match="prediction_type='v'|zero-terminal-SNR"):
        get_sampler(name, prediction_type="eps", rescale_zero_snr=True, timestep_spacing="trailing").set_timesteps(10)


@pytest.mark.parametrize("name", ["plms", "dpm_solver_3m", "uni_pc", "heun", "lms"])
def test_manual_loop_reuse_gives_same_result(name):
    """The diffusers-style loop (scale_model_input / step) twice on one object, no set_timesteps between:
    multistep history must not leak from the first run into the second."""
    sampler = get_sampler(name)
    data = GaussianData(MU, STD, sampler._train_sigmas())
    model = data.model("eps")
    x_T = np.random.default_rng(0).standard_normal((2, 4, 2, 2)).astype(np.float32)
    sampler.set_timesteps(7)
    runs = []
    for _ in range(2):
        x = x_T * sampler.init_noise_sigma
        for i, t in enumerate(sampler.timesteps):
            x, _ = sampler.step(model(sampler.scale_model_input(x, i), float(t)), i, x)
        runs.append(x)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], sampler.sample(model, x_T), atol=1e-6)
