"""Gaussian data x0 ~ N(mu, std^2) (per channel): the one case where the optimal denoiser and the exact
probability-flow ODE solution are closed form, so samplers can be checked against the truth.

With x_t = a x0 + b eps (a = sqrt(abar), b = sqrt(1 - abar)) the marginal is N(a mu, a^2 std^2 + b^2), and
    E[eps | x_t] = b (x_t - a mu) / (a^2 std^2 + b^2),   E[x0 | x_t] = mu + a std^2 (x_t - a mu) / (a^2 std^2 + b^2).
The PF-ODE keeps the standardised coordinate u = (x_t - a mu) / sqrt(a^2 std^2 + b^2) constant, so the
exact ODE map between two noise levels is an affine map. numpy only (the bench's diffusers side imports it too).
"""
import numpy as np


class GaussianData:
    """mu, std: arrays broadcastable against latents [N, C, H, W] (e.g. shape [1, C, 1, 1])."""

    def __init__(self, mu, std, train_sigmas):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.train_sigmas = np.asarray(train_sigmas, dtype=np.float64)

    def alpha_cumprod_at(self, t):
        """abar at a (possibly fractional) timestep, interpolating sigma linearly as the samplers do."""
        sigma = np.interp(float(t), np.arange(len(self.train_sigmas)), self.train_sigmas)
        return 1.0 / (1.0 + sigma ** 2)

    def marginal(self, abar):
        """(mean, variance) of x_t at noise level abar."""
        return np.sqrt(abar) * self.mu, abar * self.std ** 2 + (1.0 - abar)

    def optimal_affine(self, abar, prediction_type):
        """(slope, offset) with optimal output = slope * x_t + offset (the predictor is affine in x_t)."""
        a, b = np.sqrt(abar), np.sqrt(1.0 - abar)
        mean, var = self.marginal(abar)
        eps = (b / var, -b * mean / var)
        x0 = (a * self.std ** 2 / var, self.mu - a * self.std ** 2 * mean / var)
        if prediction_type == "eps":
            return eps
        if prediction_type == "x0":
            return x0
        return a * eps[0] - b * x0[0], a * eps[1] - b * x0[1]

    def optimal_output(self, x, abar, prediction_type):
        """The MSE-optimal eps / v / x0 prediction at level abar (float64)."""
        slope, offset = self.optimal_affine(abar, prediction_type)
        return slope * np.asarray(x, dtype=np.float64) + offset

    def model(self, prediction_type, dtype=np.float32):
        """denoise_fn(x, t) of an exact model of this data, returning ``dtype`` (None: x's dtype)."""
        cache = {}

        def denoise(x, t):
            if t not in cache:
                slope, offset = self.optimal_affine(self.alpha_cumprod_at(t), prediction_type)
                out_dtype = dtype if dtype is not None else np.asarray(x).dtype
                cache[t] = (slope.astype(out_dtype), offset.astype(out_dtype))
            slope, offset = cache[t]
            return slope * x + offset
        return denoise

    def ode_map(self, x, abar_from, abar_to):
        """Exact PF-ODE transport of x from level abar_from to level abar_to."""
        m0, v0 = self.marginal(abar_from)
        m1, v1 = self.marginal(abar_to)
        return m1 + np.sqrt(v1 / v0) * (np.asarray(x, dtype=np.float64) - m0)


def sampler_start(sampler, x_T):
    """(abar at the first model call, the variance-preserving latent there) for a set-up sampler."""
    x_vp = np.asarray(sampler.scale_model_input(sampler.init_noise_sigma * x_T, 0), dtype=np.float64)
    sigmas = getattr(sampler, "sigmas", None)
    if sigmas is not None:
        return 1.0 / (1.0 + float(sigmas[0]) ** 2), x_vp
    return float(sampler.schedule.alphas_cumprod[int(sampler.timesteps[0])]), x_vp
