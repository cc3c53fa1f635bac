"""Karras-style samplers in sigma space: Euler, Euler ancestral, Heun, LMS (k-diffusion's algorithms,
step-for-step as diffusers' Euler/EulerAncestral/Heun/LMSDiscreteScheduler).

The latent lives in the variance-exploding scaling x = x_vp * sqrt(1 + sigma^2) (so x_T = sigma_max * z)
and the model sees x / sqrt(1 + sigma^2) at a fractional timestep t(sigma). The ODE is
dx/dsigma = (x - x0_hat) / sigma.
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, StepOutput, combine
from ldm.diffusion.schedule import karras_sigmas


def lms_coefficient(sigmas, i, order, k):
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of node sigma_{i-k}
    on the nodes sigma_i, ..., sigma_{i-order+1} (exact polynomial integration)."""
    nodes = [sigmas[i - j] for j in range(order)]
    poly = np.poly1d([1.0])
    for j, node in enumerate(nodes):
        if j != k:
            poly *= np.poly1d([1.0, -node]) / (nodes[k] - node)
    antideriv = np.polyint(poly)
    return antideriv(sigmas[i + 1]) - antideriv(sigmas[i])


class _KSampler(Sampler):
    integer_timesteps = False
    karras_from_train_range = False

    def _sigma_grid(self, n):
        train = self._train_sigmas()
        ts = self.grid(n)
        sig = self._interp_sigmas(ts)
        if self.options.get("use_karras_sigmas"):
            sig = karras_sigmas(sig[-1], sig[0], n)
            ts = self._sigmas_to_t(sig, train)
        return ts, np.concatenate([sig, [0.0]])

    def _one_call_per_step_grid(self, n):
        """Timesteps, sigmas (ending in 0), model-input scales and init sigma for one model call a step."""
        ts, sig = self._sigma_grid(n)
        self.timesteps, self.sigmas = ts, sig
        self._input_scales = 1.0 / np.sqrt(sig[:-1] ** 2 + 1.0)
        self._set_init_sigma(sig)
        return sig

    def _set_init_sigma(self, sig):
        smax = float(np.max(sig))
        self.init_noise_sigma = smax if self.timestep_spacing in ("linspace", "trailing") else (smax ** 2 + 1) ** 0.5

    def _x0_coefs_ve(self, sigma):
        """(c_x, c_out) with x0_hat = c_x * x + c_out * output for the VE-scaled latent x."""
        alpha = 1.0 / np.sqrt(sigma ** 2 + 1.0)
        c_x, c_out = prediction.coefficients(self.prediction_type, "x0", alpha, sigma * alpha)
        return c_x * alpha, c_out


class EulerSampler(_KSampler):
    """Euler (k-diffusion Algorithm 2 with optional churn s_churn)."""

    name = "euler"
    defaults = dict(use_karras_sigmas=False, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0)

    @property
    def stochastic(self):
        return self.s_churn > 0

    def _plan(self, n):
        sig = self._one_call_per_step_grid(n)
        self._steps = []
        for i in range(n):
            s, s_next = sig[i], sig[i + 1]
            gamma = min(self.s_churn / n, 2 ** 0.5 - 1) if self.s_tmin <= s <= self.s_tmax else 0.0
            s_hat = s * (gamma + 1)
            if self.prediction_type == "eps":     # diffusers: eps uses sigma_hat, v uses sigma
                cx, co = 1.0, -s_hat
            else:
                cx, co = self._x0_coefs_ve(s)
            self._steps.append(dict(gamma=gamma, churn=np.sqrt(max(s_hat ** 2 - s ** 2, 0.0)) * self.s_noise,
                                    cx=cx, co=co, r=(s_next - s_hat) / s_hat))

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._steps[i]
        if c["gamma"] > 0:
            sample = sample + float(c["churn"]) * self._draw(noise_fn, sample)
        x0 = combine([(c["cx"], sample), (c["co"], model_output)])
        # x + (x - x0) / sigma_hat * (sigma_next - sigma_hat)
        return StepOutput(combine([(1.0 + c["r"], sample), (-c["r"], x0)]), x0)


class EulerAncestralSampler(_KSampler):
    """Euler ancestral: a deterministic Euler step to sigma_down, then fresh noise of std sigma_up."""

    name = "euler_a"
    stochastic = True
    defaults = dict(use_karras_sigmas=False)

    def _plan(self, n):
        sig = self._one_call_per_step_grid(n)
        self._steps = []
        for i in range(n):
            s, s_next = sig[i], sig[i + 1]
            s_up = np.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
            s_down = np.sqrt(s_next ** 2 - s_up ** 2)
            cx, co = self._x0_coefs_ve(s)
            self._steps.append(dict(cx=cx, co=co, r=(s_down - s) / s, up=s_up))

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._steps[i]
        x0 = combine([(c["cx"], sample), (c["co"], model_output)])
        prev = combine([(1.0 + c["r"], sample), (-c["r"], x0)])
        return StepOutput(prev + float(c["up"]) * self._draw(noise_fn, sample), x0)


class HeunSampler(_KSampler):
    """Heun (k-diffusion Algorithm 1 without churn): 2 model calls per step, Euler on the last one.
    Model calls: 2n - 1; call 2k is the Euler predictor of step k, call 2k+1 its trapezoidal corrector."""

    name = "heun"
    calls_per_step = 2
    defaults = dict(use_karras_sigmas=False, clip_sample=False, clip_sample_range=1.0)

    def _plan(self, n):
        ts, sig = self._sigma_grid(n)
        self.sigmas = sig
        self.timesteps = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
        call_sigmas = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2)])
        self._input_scales = 1.0 / np.sqrt(call_sigmas ** 2 + 1.0)
        self._set_init_sigma(sig)
        self._calls = []
        for j in range(len(self.timesteps)):
            k = (j + 1) // 2
            if j % 2 == 0:      # predictor from sigma_k to sigma_{k+1}
                s = sig[k]
                self._calls.append(dict(first=True, x0=self._x0_coefs_ve(s), s=s, dt=sig[k + 1] - s))
            else:               # corrector: the output was made at sigma_k (= the predictor's target)
                s = sig[k]
                self._calls.append(dict(first=False, x0=self._x0_coefs_ve(s), s=s))

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._calls[i]
        x0 = self._postprocess_x0(combine([(c["x0"][0], sample), (c["x0"][1], model_output)]))
        st = self._state
        if c["first"]:
            d = combine([(1.0 / c["s"], sample), (-1.0 / c["s"], x0)])
            st.update(d=d, dt=c["dt"], start=sample)
            return StepOutput(combine([(1.0, sample), (c["dt"], d)]), x0)
        d = combine([(1.0 / c["s"], sample), (-1.0 / c["s"], x0)])
        prev = combine([(1.0, st.pop("start")), (0.5 * st["dt"], st.pop("d")), (0.5 * st.pop("dt"), d)])
        return StepOutput(prev, x0)


class LMSSampler(_KSampler):
    """Linear multistep (k-diffusion): Adams-type combination of up to ``order`` past derivatives."""

    name = "lms"
    defaults = dict(use_karras_sigmas=False, order=4)

    def _plan(self, n):
        sig = self._one_call_per_step_grid(n)
        self._steps = []
        for i in range(n):
            order = min(i + 1, self.order)
            coefs = [lms_coefficient(sig, i, order, k) for k in range(order)]
            self._steps.append(dict(x0=self._x0_coefs_ve(sig[i]), s=sig[i], coefs=coefs))

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._steps[i]
        x0 = combine([(c["x0"][0], sample), (c["x0"][1], model_output)])
        d = combine([(1.0 / c["s"], sample), (-1.0 / c["s"], x0)])
        ders = self._state.setdefault("derivatives", [])
        ders[:] = ders[-(self.order - 1):] + [d] if self.order > 1 else [d]
        # a run that starts mid-schedule (img2img, inpainting strength) has fewer derivatives than step i's
        # order: the sum stops at the ones there are, as diffusers' zip over its derivative list does
        terms = [(1.0, sample)] + [(coef, ders[-1 - k]) for k, coef in enumerate(c["coefs"]) if k < len(ders)]
        return StepOutput(combine(terms), x0)
