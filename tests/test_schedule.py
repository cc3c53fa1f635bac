"""Noise schedules and timestep grids against diffusers (fixture) and the defining formulas."""
import os

import numpy as np
import pytest

from ldm.diffusion.schedule import NoiseSchedule, karras_sigmas, sigma_to_t, spaced_timesteps


@pytest.fixture(scope="module")
def reference(fixtures_dir=os.path.join(os.path.dirname(__file__), "fixtures")):
    return np.load(os.path.join(fixtures_dir, "samplers", "schedules.npz"))


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("zero", [False, True])
def test_schedule_matches_diffusers(reference, name, zero):
    sched = NoiseSchedule(name, 0.00085, 0.012, 1000, rescale_zero_snr=zero)
    ref_betas = reference[f"{name}_{int(zero)}_betas"]
    ref_abar = reference[f"{name}_{int(zero)}_alphas_cumprod"]
    # diffusers computes in float32 (its zero-SNR betas come from a float32 ratio: ~4e-7 absolute noise)
    np.testing.assert_allclose(sched.betas, ref_betas, rtol=2e-5, atol=1e-6 if zero else 1e-7)
    np.testing.assert_allclose(sched.alphas_cumprod, ref_abar, rtol=5e-5, atol=1e-6)
    assert sched.betas.dtype == np.float64


def test_zero_terminal_snr_properties():
    plain = NoiseSchedule()
    zero = NoiseSchedule(rescale_zero_snr=True)
    assert zero.alphas_cumprod[-1] == pytest.approx(0.0, abs=1e-15)
    assert zero.snr[-1] == pytest.approx(0.0, abs=1e-12)
    assert zero.alphas_cumprod[0] == pytest.approx(plain.alphas_cumprod[0], rel=1e-12)
    assert np.all(np.diff(zero.alphas_cumprod) < 0)


def test_sd_defaults():
    s = NoiseSchedule()
    assert s.betas[0] == pytest.approx(0.00085) and s.betas[-1] == pytest.approx(0.012)
    assert s.alphas_cumprod[-1] == pytest.approx(0.0046, abs=1e-4)     # SD's terminal SNR is not zero
    from ldm.diffusion.spec import resolve_spec
    s2 = resolve_spec({"params": {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}}).schedule
    np.testing.assert_array_equal(s.betas, s2.betas)


def test_timestep_spacings():
    np.testing.assert_array_equal(spaced_timesteps("leading", 50, 1000, 1)[:3], [981, 961, 941])
    assert spaced_timesteps("leading", 50, 1000, 1)[-1] == 1
    np.testing.assert_array_equal(spaced_timesteps("trailing", 10), np.arange(999, 0, -100))
    np.testing.assert_array_equal(spaced_timesteps("linspace", 4), [999, 666, 333, 0])
    np.testing.assert_array_equal(spaced_timesteps("linspace", 4, solver_grid=True), [999, 749, 500, 250])
    np.testing.assert_allclose(spaced_timesteps("linspace", 15, integer=False)[1], 999 - 999 / 14)
    with pytest.raises(ValueError, match="trailing"):
        spaced_timesteps("leading", 1000, 1000, steps_offset=1)
    with pytest.raises(ValueError):
        spaced_timesteps("middle", 10)


def test_karras_and_sigma_to_t_roundtrip():
    s = NoiseSchedule()
    sig = karras_sigmas(s.sigmas[0], s.sigmas[-1], 10)
    assert sig[0] == pytest.approx(s.sigmas[-1]) and sig[-1] == pytest.approx(s.sigmas[0])
    assert np.all(np.diff(sig) < 0)
    t = sigma_to_t(s.sigmas[[5, 100, 999]], np.log(s.sigmas))
    np.testing.assert_allclose(t, [5, 100, 999], atol=1e-9)
