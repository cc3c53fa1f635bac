"""DDPM ancestral sampling (Ho et al. 2020), step-for-step as diffusers' DDPMScheduler."""
import numpy as np

from ldm.diffusion.base import Sampler, StepOutput, combine


class DDPMSampler(Sampler):
    """x_{t'} ~ q(x_{t'} | x_t, x0_hat): posterior mean plus noise with the fixed small (beta tilde)
    or large (beta) variance; t' is the next timestep of the grid (so it also works with few steps)."""

    name = "ddpm"
    stochastic = True
    default_spacing = "leading"
    defaults = dict(variance_type="fixed_small", clip_sample=False, clip_sample_range=1.0, thresholding=False,
                    dynamic_thresholding_ratio=0.995, sample_max_value=1.0)

    def _plan(self, n):
        if self.variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"ddpm: variance_type must be fixed_small or fixed_large, got {self.variance_type!r}")
        ts = self.grid(n)
        abar = self.schedule.alphas_cumprod
        self.timesteps = ts
        self._coefs = []
        for i, t in enumerate(ts.astype(np.int64)):
            prev = int(ts[i + 1]) if i + 1 < n else -1
            a_t, a_prev = abar[t], (abar[prev] if prev >= 0 else 1.0)
            beta = 1.0 - a_t / a_prev
            c_x0 = np.sqrt(a_prev) * beta / (1.0 - a_t)
            c_xt = np.sqrt(a_t / a_prev) * (1.0 - a_prev) / (1.0 - a_t)
            if self.variance_type == "fixed_small":
                var = max((1.0 - a_prev) / (1.0 - a_t) * beta, 1e-20)
            else:
                var = beta
            std = np.sqrt(var) if t > 0 else 0.0
            self._coefs.append((self._x0_coefficients(np.sqrt(a_t), np.sqrt(1.0 - a_t)), c_x0, c_xt, std))
        self.final_alpha_cumprod = 1.0

    def _step(self, model_output, i, sample, noise_fn=None):
        (cx, co), c_x0, c_xt, std = self._coefs[i]
        x0 = self._postprocess_x0(combine([(cx, sample), (co, model_output)]))
        prev = combine([(c_x0, x0), (c_xt, sample)])
        if self.timesteps[i] > 0:
            prev = prev + float(std) * self._draw(noise_fn, sample)
        return StepOutput(prev, x0)
