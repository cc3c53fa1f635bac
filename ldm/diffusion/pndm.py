"""PLMS (pseudo linear multistep, Liu et al. 2022), as diffusers' PNDMScheduler with skip_prk_steps=True
(what Stable Diffusion ships). The first step is a Heun-like pair of model calls, then Adams-Bashforth
combinations of up to four previous outputs are pushed through the PNDM transfer formula.

With a v model diffusers combines the raw v outputs and converts the combination to eps with the
*current* latent, although each v belongs to a different latent; on the analytic benchmark that makes
PLMS-v 6-40x less accurate than PLMS-eps. ``exact_v_conversion=True`` converts every output to eps at
the latent and timestep it was made for before combining (default False: diffusers' behaviour).
"""
import numpy as np

from ldm.diffusion.base import Sampler, StepOutput, combine

_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


class PLMSSampler(Sampler):
    name = "plms"
    default_spacing = "leading"
    defaults = dict(set_alpha_to_one=False, exact_v_conversion=False)

    def _plan(self, n):
        grid = self.grid(n)
        # n + 1 model calls: the second grid point is visited twice (predictor, then the averaged step)
        self.timesteps = np.concatenate([grid[:1], grid[1:2], grid[1:]]) if n > 1 else grid.copy()
        abar = self.schedule.alphas_cumprod
        boundary = 1.0 if self.set_alpha_to_one else float(abar[0])
        stride = self.num_train_timesteps // n
        self._transfer = []
        for j, t in enumerate(self.timesteps.astype(np.int64)):
            t_from, t_to = (t + stride, t) if j == 1 else (t, t - stride)
            a_t = abar[t_from]
            if a_t == 0.0:
                raise ValueError("plms: the PNDM transfer formula divides by alphas_cumprod, which is 0 at the "
                                 "last step of a zero-terminal-SNR schedule; use ddim, dpm_solver, uni_pc or euler")
            a_prev = abar[t_to] if t_to >= 0 else boundary
            denom = a_t * np.sqrt(1.0 - a_prev) + np.sqrt(a_t * (1.0 - a_t) * a_prev)
            a_call = abar[t]                      # the level the model output of this call belongs to
            self._transfer.append(dict(alpha=np.sqrt(a_t), sigma=np.sqrt(1.0 - a_t),
                                       c_x=np.sqrt(a_prev / a_t), c_eps=-(a_prev - a_t) / denom,
                                       call_alpha=np.sqrt(a_call), call_sigma=np.sqrt(1.0 - a_call)))
            self.final_alpha_cumprod = float(a_prev)

    def _step(self, model_output, i, sample, noise_fn=None):
        st = self._state
        ets = st.setdefault("ets", [])
        c = self._transfer[i]
        exact_v = self.exact_v_conversion and self.prediction_type == "v"
        if exact_v:
            model_output = combine([(c["call_alpha"], model_output), (c["call_sigma"], sample)])
        if i != 1:
            ets[:] = ets[-3:] + [model_output]
        if i == 0:
            st["cur_sample"] = sample
            combo = model_output
        elif i == 1:
            combo = combine([(0.5, model_output), (0.5, ets[-1])])
            sample = st.pop("cur_sample")
        else:
            weights = _AB[len(ets)]
            combo = combine([(w, e) for w, e in zip(weights, reversed(ets))])
        if exact_v:
            eps = combo
        elif self.prediction_type == "v":   # diffusers converts the combined v with the current sample
            eps = combine([(c["alpha"], combo), (c["sigma"], sample)])
        elif self.prediction_type == "eps":
            eps = combo
        else:
            raise ValueError("plms supports eps and v models only")
        prev = combine([(c["c_x"], sample), (c["c_eps"], eps)])
        x0 = combine([(1.0 / c["alpha"], sample), (-c["sigma"] / c["alpha"], eps)])
        return StepOutput(prev, x0)
