"""Discrete-time noise schedules (betas -> alphas_cumprod) and the timestep grids samplers walk.

Index convention: timestep t in [0, T-1] is the t-th training step; alphas_cumprod[t] = prod_{s<=t}(1-beta_s),
so x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) eps. All arrays are float64 numpy,
computed once; MindSpore copies (float32) are made once on first use by :meth:`NoiseSchedule.add_noise`.
"""
import math

import numpy as np

from ldm.diffusion import xp

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def make_betas(beta_schedule, linear_start, linear_end, num_train_timesteps):
    """[T] float64 betas. "scaled_linear" (SD) is linear in sqrt(beta)."""
    if beta_schedule == "linear":
        return np.linspace(linear_start, linear_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(linear_start ** 0.5, linear_end ** 0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal's cosine schedule, betas capped at 0.999
        def alpha_bar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        n = num_train_timesteps
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                        dtype=np.float64)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas):
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alphas_cumprod) so the last step has SNR 0
    (pure noise) while the first keeps its value. Use with v-prediction and trailing spacing."""
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar ** 2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def spaced_timesteps(spacing, num_steps, num_train_timesteps=1000, steps_offset=0, solver_grid=False,
                     integer=True):
    """Descending timesteps for ``num_steps`` model calls (float64 array).

    leading:  multiples of T//n (+ steps_offset), trailing: round(T - k T/n) - 1, linspace: n points on [0, T-1].
    ``solver_grid``: the DPM-Solver/UniPC flavour, which lays n+1 points and drops the final 0.
    ``integer=False`` keeps fractional linspace points (the k-diffusion samplers do).
    """
    T, n = num_train_timesteps, num_steps
    if n < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {n}")
    if n > T:
        raise ValueError(f"num_inference_steps ({n}) cannot exceed the {T} training timesteps")
    if spacing == "linspace":
        if solver_grid:
            ts = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
        else:
            ts = np.linspace(0, T - 1, n)[::-1]
            ts = ts.round() if integer else ts
    elif spacing == "leading":
        ratio = T // (n + 1) if solver_grid else T // n
        ts = (np.arange(0, n + 1 if solver_grid else n) * ratio)[::-1]
        ts = (ts[:-1] if solver_grid else ts) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}")
    ts = np.ascontiguousarray(ts, dtype=np.float64)
    if ts.max() > T - 1 or ts.min() < 0:
        raise ValueError(f"timesteps {ts.min():g}..{ts.max():g} fall outside [0, {T - 1}] "
                         f"(spacing={spacing}, steps={n}, steps_offset={steps_offset}); "
                         "lower steps_offset or use 'trailing' spacing")
    return ts


def karras_sigmas(sigma_min, sigma_max, num_steps, rho=7.0):
    """Karras et al. 2022 eq. 5: n sigmas from sigma_max down to sigma_min, uniform in sigma^(1/rho)."""
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigmas, log_sigmas):
    """Fractional timesteps whose (log-linearly interpolated) sigma equals ``sigmas``."""
    sigmas = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=len(log_sigmas) - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def add_noise_at(x0, noise, alphas_cumprod_t):
    """q(x_t | x_0) given abar_t itself ([N], [N, 1, ...] or a float): sqrt(abar) x0 + sqrt(1 - abar) noise.
    Works inside a compiled MindSpore graph (training looks abar up on the host and passes it in)."""
    abar = xp.broadcast_to_sample(alphas_cumprod_t, x0)
    return abar ** 0.5 * x0 + (1.0 - abar) ** 0.5 * noise


class NoiseSchedule:
    """Variance-preserving discrete schedule. ``betas`` (optional) overrides the named schedule.

    Arrays (float64, shape [T]): betas, alphas, alphas_cumprod, alphas_cumprod_prev,
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, snr, sigmas (k-diffusion sigma = sqrt((1-a)/a)).
    """

    def __init__(self, beta_schedule="scaled_linear", linear_start=0.00085, linear_end=0.012,
                 num_train_timesteps=1000, rescale_zero_snr=False, betas=None):
        if betas is None:
            betas = make_betas(beta_schedule, linear_start, linear_end, num_train_timesteps)
        betas = np.asarray(betas, dtype=np.float64)
        if rescale_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all(), "betas must lie in (0, 1]"
        self.config = dict(beta_schedule=beta_schedule, linear_start=linear_start, linear_end=linear_end,
                           num_train_timesteps=len(betas), rescale_zero_snr=bool(rescale_zero_snr))
        self.num_train_timesteps = len(betas)
        self.rescale_zero_snr = bool(rescale_zero_snr)
        # q(x_t | x_0)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        with np.errstate(divide="ignore"):
            self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
            self.sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)
        self._ms_cache = {}

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod):
        """Schedule with exactly these alphas_cumprod (e.g. another implementation's float32 arrays);
        a terminal value of 0 marks it as zero-terminal-SNR."""
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        sched = cls(betas=1.0 - abar / np.concatenate([[1.0], abar[:-1]]))
        if abar[-1] == 0.0:
            sched.rescale_zero_snr = sched.config["rescale_zero_snr"] = True
        return sched

    def _gather(self, name, t, x):
        """arr[t] as a per-sample coefficient broadcastable against x; stays on x's device for MindSpore."""
        arr = getattr(self, name)
        if xp.is_mindspore(x):
            import mindspore as ms
            key = (name, x.dtype)
            if key not in self._ms_cache:
                self._ms_cache[key] = ms.Tensor(arr, dtype=x.dtype)
            if not xp.is_mindspore(t):
                t = ms.Tensor(np.asarray(t, dtype=np.int32))
            vals = ms.ops.gather(self._ms_cache[key], t.astype(ms.int32), 0)
        else:
            vals = arr[np.asarray(t, dtype=np.int64)].astype(x.dtype)
        return xp.broadcast_to_sample(vals, x)

    def add_noise(self, x0, noise, t):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise [N, ...], t int [N] (numpy or Tensor)."""
        return add_noise_at(x0, noise, self.alphas_cumprod_at(t, x0))

    def alphas_cumprod_at(self, t, like):
        """alphas_cumprod[t] shaped [N, 1, ...] in the library/dtype of ``like`` (for training targets)."""
        return self._gather("alphas_cumprod", t, like)

    def snr_at(self, t, like):
        return self._gather("snr", t, like)
