"""The continuous-time view of a discrete VP schedule that the original DPM-Solver and UniPC code solve on.

As ``NoiseScheduleVP('discrete', alphas_cumprod=...)`` (Lu et al. 2022, and MindONE's port of it): training
step n = 0..N-1 sits at continuous time t_n = (n + 1) / N, and log alpha_t = 0.5 log(abar) is linear in t
between these knots (linearly extrapolated outside them). Sampling integrates from T = 1 down to
t_0 = 1 / N, and the UNet is called at the fractional timestep (t - 1/N) * 1000 -- for N = 1000 that is
the fractional training index whose log-alpha the solver uses. All arrays float64.
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, combine


class ContinuousVPSchedule:
    """alphas_cumprod [N] (all > 0) -> alpha_t, sigma_t, lambda_t = log(alpha_t / sigma_t) at any t."""

    def __init__(self, alphas_cumprod):
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or len(abar) < 2 or not (abar > 0).all():
            raise ValueError("the continuous VP schedule needs N >= 2 alphas_cumprod, all > 0 (a zero "
                             "terminal value must be clamped first, see Sampler._alphas_cumprod_for_sigmas)")
        self.total_N = len(abar)
        self.t_array = np.linspace(0.0, 1.0, self.total_N + 1)[1:]       # knot of step n: (n + 1) / N
        self.log_alpha_array = 0.5 * np.log(abar)
        self.T = 1.0
        self.t_eps = 1.0 / self.total_N

    def log_alpha(self, t):
        """Piecewise-linear log alpha_t; beyond the outer knots the outer segments are extended."""
        t = np.asarray(t, dtype=np.float64)
        knots, vals = self.t_array, self.log_alpha_array
        k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2)
        return vals[k] + (t - knots[k]) * (vals[k + 1] - vals[k]) / (knots[k + 1] - knots[k])

    def alpha(self, t):
        return np.exp(self.log_alpha(t))

    def sigma(self, t):
        return np.sqrt(-np.expm1(2.0 * self.log_alpha(t)))

    def lam(self, t):
        """Half log-SNR lambda_t = log alpha_t - log sigma_t."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * np.log(-np.expm1(2.0 * log_alpha))

    def alphas_cumprod_at(self, t):
        return np.exp(2.0 * self.log_alpha(t))

    def model_time(self, t):
        """The UNet's timestep input for continuous time t: (t - 1/N) * 1000 (the original's rule)."""
        return (np.asarray(t, dtype=np.float64) - self.t_eps) * 1000.0

    def time_uniform(self, n):
        """skip_type='time_uniform': n + 1 times from T = 1 down to 1/N (n model calls, n steps)."""
        return np.linspace(self.T, self.t_eps, int(n) + 1)


class VPTimeSampler(Sampler):
    """What the original-code samplers share: the time_uniform grid on :class:`ContinuousVPSchedule`,
    fractional UNet timesteps, and per-call conversion of the model output to eps or x0.

    A zero terminal abar (zero-SNR schedules) is clamped to 2**-24 first, as the sigma-space samplers do
    (:meth:`Sampler._alphas_cumprod_for_sigmas`), so lambda_T stays finite (about -8.3); the original
    code would take log(0) there.
    """

    integer_timesteps = False

    def __init__(self, timestep_spacing=None, steps_offset=1, **kwargs):
        if timestep_spacing is not None:
            raise ValueError(f"{self.name}: the original code's grid is uniform in continuous time "
                             f"(time_uniform), not timestep_spacing={timestep_spacing!r}; use dpm_solver or "
                             "uni_pc for leading/trailing/linspace")
        if int(steps_offset) != 1:
            raise ValueError(f"{self.name}: steps_offset does not apply to the continuous-time grid")
        super().__init__(**kwargs)
        self.timestep_spacing = self.config["timestep_spacing"] = "time_uniform"

    def _time_grid(self, n, target):
        """Fill timesteps and the noise levels for n calls; returns float64 (alpha, sigma, lam) over
        the n + 1 grid times (the last one, t = 1/N, is where sampling ends)."""
        self.vp = ContinuousVPSchedule(self._alphas_cumprod_for_sigmas())
        times = self.vp.time_uniform(n)
        self.times = times
        self.timesteps = self.vp.model_time(times[:-1])
        alpha, sigma, lam = self.vp.alpha(times), self.vp.sigma(times), self.vp.lam(times)
        self._abar = alpha ** 2
        self._target = target
        self.final_alpha_cumprod = float(self._abar[-1])
        self._to_target = [prediction.coefficients(self.prediction_type, target, a, s)
                           for a, s in zip(alpha[:-1], sigma[:-1])]
        self._to_x0 = [self._x0_coefficients(a, s) for a, s in zip(alpha[:-1], sigma[:-1])]
        return alpha, sigma, lam

    def noise_level(self, i):
        """abar the model sees at call i: exp(2 log alpha(t_i)) (log-alpha interpolation, not abar's)."""
        return float(self._abar[i])

    def _convert(self, model_output, sample, i):
        """(model output as the solver's target, x0 prediction) at call i."""
        c = self._to_target[i]
        m = combine([(c[0], sample), (c[1], model_output)])
        if self._target == "x0":
            return m, m
        c = self._to_x0[i]
        return m, combine([(c[0], sample), (c[1], model_output)])
