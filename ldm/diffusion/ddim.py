"""DDIM (Song et al. 2021): eta-controlled sampling, clip/threshold options, deterministic inversion.

Step-for-step as diffusers' DDIMScheduler / DDIMInverseScheduler, including their convention that the
previous timestep is t - T // n whatever the spacing (with trailing spacing this is the grid's next
point only when n divides T).
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, StepOutput, combine


class DDIMSampler(Sampler):
    """x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - std^2) eps_hat + std z, std = eta sigma_t(DDPM)."""

    name = "ddim"
    default_spacing = "leading"
    defaults = dict(eta=0.0, clip_sample=False, clip_sample_range=1.0, set_alpha_to_one=False,
                    thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0,
                    use_clipped_model_output=False)

    @property
    def stochastic(self):
        return self.eta > 0

    def _boundary_alpha(self):
        return 1.0 if self.set_alpha_to_one else float(self.schedule.alphas_cumprod[0])

    def _plan(self, n):
        ts = self.grid(n)
        abar = self.schedule.alphas_cumprod
        stride = self.num_train_timesteps // n
        self.timesteps = ts
        self._coefs = []
        for t in ts.astype(np.int64):
            prev = t - stride
            a_t = abar[t]
            a_prev = abar[prev] if prev >= 0 else self._boundary_alpha()
            var = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
            std = self.eta * np.sqrt(var)
            alpha, sigma = np.sqrt(a_t), np.sqrt(1.0 - a_t)
            self._coefs.append(dict(x0=self._x0_coefficients(alpha, sigma),
                                    eps=prediction.coefficients(self.prediction_type, "eps", alpha, sigma),
                                    alpha=alpha, sigma=sigma, c_x0=np.sqrt(a_prev),
                                    c_eps=np.sqrt(max(1.0 - a_prev - std ** 2, 0.0)), std=std))
            self.final_alpha_cumprod = float(a_prev)

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._coefs[i]
        x0 = self._postprocess_x0(combine([(c["x0"][0], sample), (c["x0"][1], model_output)]))
        if self.use_clipped_model_output:
            eps = combine([(1.0 / c["sigma"], sample), (-c["alpha"] / c["sigma"], x0)])
        else:
            eps = combine([(c["eps"][0], sample), (c["eps"][1], model_output)])
        prev = combine([(c["c_x0"], x0), (c["c_eps"], eps)])
        if self.eta > 0:
            prev = prev + float(c["std"]) * self._draw(noise_fn, sample)
        return StepOutput(prev, x0)

    # ---- deterministic encoding (DDIM paper sec. 4.3 / 5.4)
    def inversion_timesteps(self, n):
        """Ascending timesteps of the inversion (the sampling grid reversed)."""
        return self.grid(n)[::-1].copy()

    def invert(self, denoise_fn, x0_latent, num_inference_steps, callback=None):
        """Run the DDIM ODE forwards: clean latent -> x_T that DDIM (eta=0) maps back to it.

        As diffusers' DDIMInverseScheduler: at each ascending t the model is called on the current latent
        with timestep t, and the latent moves from level t - T//n (or the boundary) to level t.
        """
        ts = self.inversion_timesteps(num_inference_steps)
        abar = self.schedule.alphas_cumprod
        T = self.num_train_timesteps
        stride = T // num_inference_steps
        x = x0_latent
        for i, t in enumerate(ts.astype(np.int64)):
            cur = min(t - stride, T - 1)
            a_cur = abar[cur] if cur >= 0 else self._boundary_alpha()
            a_next = abar[t]
            alpha, sigma = np.sqrt(a_cur), np.sqrt(1.0 - a_cur)
            out = denoise_fn(x, float(t))
            cx, co = self._x0_coefficients(alpha, sigma)
            ex, eo = prediction.coefficients(self.prediction_type, "eps", alpha, sigma)
            x0 = combine([(cx, x), (co, out)])
            if self.clip_sample:
                x0 = self._postprocess_x0(x0)
            eps = combine([(ex, x), (eo, out)])
            x = combine([(np.sqrt(a_next), x0), (np.sqrt(1.0 - a_next), eps)])
            if callback is not None:
                callback(i, float(t), x, x0)
        return x
