"""eps / v / x0 / score algebra and training targets (numpy and MindSpore agree)."""
import mindspore as ms
import numpy as np
import pytest

from ldm.diffusion import prediction as P
from ldm.diffusion.schedule import NoiseSchedule

KINDS = ("eps", "v", "x0")


def _setup(seed=0, n=6):
    rng = np.random.default_rng(seed)
    sched = NoiseSchedule()
    t = rng.integers(0, 1000, size=n)
    x0 = rng.standard_normal((n, 4, 3, 3))
    noise = rng.standard_normal((n, 4, 3, 3))
    abar = sched.alphas_cumprod[t]
    x_t = sched.add_noise(x0, noise, t)
    return sched, t, x0, noise, abar, x_t


def test_add_noise_matches_definition():
    sched, t, x0, noise, abar, x_t = _setup()
    a = np.sqrt(abar)[:, None, None, None]
    np.testing.assert_allclose(x_t, a * x0 + np.sqrt(1 - a ** 2) * noise, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_targets_convert_back_to_x0_eps_v(kind):
    """A perfect model (output == training target) must give back x0, the noise and v exactly."""
    sched, t, x0, noise, abar, x_t = _setup(1)
    out = P.get_target(kind, x0, noise, abar)
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    v = a[:, None, None, None] * noise - s[:, None, None, None] * x0
    np.testing.assert_allclose(P.to_x0(kind, out, x_t, a, s), x0, atol=1e-9)
    np.testing.assert_allclose(P.to_eps(kind, out, x_t, a, s), noise, atol=1e-9)
    np.testing.assert_allclose(P.to_v(kind, out, x_t, a, s), v, atol=1e-9)
    np.testing.assert_allclose(P.to_score(kind, out, x_t, a, s), -noise / s[:, None, None, None], atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", ("eps", "v", "x0", "score"))
def test_scalar_coefficients_match_array_formulas(kind, target):
    sched, t, x0, noise, abar, x_t = _setup(2)
    out = P.get_target(kind, x0, noise, abar)
    for i in range(len(t)):
        a, s = float(np.sqrt(abar[i])), float(np.sqrt(1 - abar[i]))
        got = P.convert(kind, target, out[i], x_t[i], a, s)
        ref = P.convert(kind, target, out[i:i + 1], x_t[i:i + 1], np.array([a]), np.array([s]))[0]
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_v_target_formula_design_section_5():
    sched, t, x0, noise, abar, x_t = _setup(3)
    a = np.sqrt(abar)[:, None, None, None]
    v = P.get_target("v", x0, noise, abar)
    np.testing.assert_allclose(v, a * noise - np.sqrt(1 - a ** 2) * x0, atol=1e-12)
    np.testing.assert_allclose(a * x_t - np.sqrt(1 - a ** 2) * v, x0, atol=1e-9)
    np.testing.assert_allclose(a * v + np.sqrt(1 - a ** 2) * x_t, noise, atol=1e-9)


def test_mindspore_matches_numpy():
    sched, t, x0, noise, abar, x_t = _setup(4)
    x0f, nf = x0.astype(np.float32), noise.astype(np.float32)
    tms = ms.Tensor(t.astype(np.int32))
    xt_ms = sched.add_noise(ms.Tensor(x0f), ms.Tensor(nf), tms)
    np.testing.assert_allclose(xt_ms.asnumpy(), sched.add_noise(x0f, nf, t), atol=1e-6)
    abar_ms = sched.alphas_cumprod_at(tms, ms.Tensor(x0f))
    v_ms = P.get_target("v", ms.Tensor(x0f), ms.Tensor(nf), abar_ms)
    np.testing.assert_allclose(v_ms.asnumpy(), P.get_target("v", x0, noise, abar), atol=1e-5)
    a, s = abar_ms ** 0.5, (1.0 - abar_ms) ** 0.5
    x0_back = P.to_x0("v", v_ms, xt_ms, a.reshape((-1,)), s.reshape((-1,)))
    np.testing.assert_allclose(x0_back.asnumpy(), x0, atol=1e-4)


def test_min_snr_weight():
    snr = np.array([0.1, 1.0, 5.0, 50.0])
    np.testing.assert_allclose(P.min_snr_weight(snr, 5.0, "eps"), [1.0, 1.0, 1.0, 0.1])
    np.testing.assert_allclose(P.min_snr_weight(snr, 5.0, "v"), [0.1 / 1.1, 0.5, 5 / 6, 5 / 51])
    np.testing.assert_allclose(P.min_snr_weight(snr, 5.0, "x0"), [0.1, 1.0, 5.0, 5.0])
    w = P.min_snr_weight(ms.Tensor(snr.astype(np.float32)), 5.0, "velocity")
    np.testing.assert_allclose(w.asnumpy(), P.min_snr_weight(snr, 5.0, "v"), rtol=1e-6)


def test_prediction_type_aliases():
    assert P.normalize_prediction_type("velocity") == "v"
    assert P.normalize_prediction_type("v_prediction") == "v"
    assert P.normalize_prediction_type("epsilon") == "eps"
    with pytest.raises(ValueError):
        P.normalize_prediction_type("flow")
