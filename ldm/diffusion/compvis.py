"""MindONE's DDIM and PLMS (``text_to_image.py --ddim`` / ``--plms``), step for step.

MindONE's ``examples/stable_diffusion_v2/ldm/models/diffusion/ddim.py`` and ``plms.py`` are ports of the
CompVis/Stability LDM samplers, which differ from diffusers' DDIM/PNDM (our ``ddim``/``plms``):

* timesteps (LDM ``make_ddim_timesteps``): "uniform" is ``range(0, T, T // n) + 1``, which gives MORE
  than n steps when n does not divide T (n=15: 16 steps, 1..991); "quad" is
  ``int(linspace(0, sqrt(0.8 T), n) ** 2) + 1``. There is no spacing option (no leading/trailing).
* the last step lands on ``alphas_cumprod[0]`` (``ddim_alphas_prev[0]``), not on 1.
* eta: ``sigma = eta sqrt((1 - a_prev) / (1 - a) (1 - a / a_prev))``, fresh noise every step.
* PLMS warm-up: the first step is a pseudo improved Euler pair (a DDIM step with eps_0, a second model
  call there at the next timestep, then the DDIM step from the first latent with their mean), then
  Adams-Bashforth of order 2, 3, 4 on eps, each pushed through the same DDIM step (eta = 0 only).

Prediction types. MindONE's DDIM (``parameterization == "velocity"``) turns v into eps and x0 with
``sqrt_alphas_cumprod[t]`` / ``sqrt_one_minus_alphas_cumprod[t]`` at the call's own timestep, which equal
``sqrt(ddim_alphas[index])`` / ``ddim_sqrt_one_minus_alphas[index]``: the algebra of ``prediction.py``,
used here. MindONE's PLMS has no v branch (it would read v as eps; its text_to_image.py refused v for
PLMS); here every PLMS output is converted to eps at the latent and timestep of its own call, as its
DDIM does, before the multistep combination. x0-prediction models go through the same algebra.

Zero terminal SNR: as in MindONE the spec's alphas_cumprod is used, but its "trailing" default is not:
the uniform timesteps never reach T - 1, so sampling starts at 1 + T - T//n (e.g. 981 for n=50) from
unit noise, the 'leading' flaw of Lin et al. 2023. Use ``ddim`` for trailing spacing.

Other deviations: a run started part-way (img2img) at a PLMS step with no history takes a first-order
step (LDM would spend two model calls there); started at the second call of the warm-up pair, the
latent is already at that call's level and passes through.
"""
import numpy as np

from ldm.diffusion import prediction
from ldm.diffusion.base import Sampler, StepOutput, combine

DISCRETIZATIONS = ("uniform", "quad")
_AB = {0: (1.0,), 1: (1.5, -0.5), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def ldm_timesteps(method, num_steps, num_train_timesteps=1000):
    """Ascending int64 timesteps of LDM's ``make_ddim_timesteps`` (with its +1)."""
    T, n = int(num_train_timesteps), int(num_steps)
    if n < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {n}")
    if method == "uniform":
        if n > T:
            raise ValueError(f"num_inference_steps ({n}) cannot exceed the {T} training timesteps")
        ts = np.arange(0, T, T // n, dtype=np.int64) + 1
    elif method == "quad":
        ts = (np.linspace(0, np.sqrt(T * 0.8), n) ** 2).astype(np.int64) + 1
    else:
        raise ValueError(f"unknown ddim_discretize {method!r}; choose one of {', '.join(DISCRETIZATIONS)}")
    if ts[-1] > T - 1:
        ok = [m for m in range(1, T + 1) if (T - 1) % (T // m) != 0]
        near = sorted(ok, key=lambda m: (abs(m - n), m))[:2]
        raise ValueError(f"{n} uniform steps reach timestep {ts[-1]} outside [0, {T - 1}] ({T}//{n} = {T // n} "
                         f"divides {T - 1}, so LDM's code indexes past alphas_cumprod); use e.g. "
                         f"{' or '.join(map(str, sorted(near)))} steps")
    return ts


class _LDMSampler(Sampler):
    """The LDM plan shared by DDIM and PLMS: per step (descending) a_t, a_prev, sigma."""

    default_spacing = "uniform"

    def __init__(self, timestep_spacing=None, steps_offset=1, **kwargs):
        if timestep_spacing is not None:
            raise ValueError(f"{self.name} lays timesteps as MindONE does (ddim_discretize='uniform'|'quad'), "
                             f"not by timestep_spacing={timestep_spacing!r}; use ddim for leading/trailing")
        if int(steps_offset) != 1:
            raise ValueError(f"{self.name}: LDM's timesteps carry a fixed +1 offset; steps_offset must be 1")
        super().__init__(**kwargs)
        self.timestep_spacing = self.config["timestep_spacing"] = self.ddim_discretize

    @property
    def stochastic(self):
        return self.eta > 0

    def _ldm_plan(self, n):
        """(descending timesteps, [dict(a_t, a_prev, sigma)] per step), LDM's make_ddim_sampling_parameters."""
        asc = ldm_timesteps(self.ddim_discretize, n, self.num_train_timesteps)
        abar = self.schedule.alphas_cumprod
        a = abar[asc]
        a_prev = np.concatenate([abar[:1], abar[asc[:-1]]])
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = self.eta * np.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
        sigma = np.nan_to_num(sigma)                   # a duplicate "quad" step: a == a_prev, no noise
        steps = [dict(t=int(t), a_t=float(at), a_prev=float(ap), sigma=float(s))
                 for t, at, ap, s in zip(asc[::-1], a[::-1], a_prev[::-1], sigma[::-1])]
        self.final_alpha_cumprod = float(abar[0])
        return asc[::-1].astype(np.float64), steps

    def _transfer(self, step):
        """Coefficients of x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps (+ sigma z)."""
        alpha, sigma = np.sqrt(step["a_t"]), np.sqrt(1.0 - step["a_t"])
        return dict(step, alpha=alpha, sigma_t=sigma, c_x0=np.sqrt(step["a_prev"]),
                    c_eps=np.sqrt(max(1.0 - step["a_prev"] - step["sigma"] ** 2, 0.0)))


class CompVisDDIMSampler(_LDMSampler):
    """MindONE ``DDIMSampler.sample(S=n, eta=eta)``: p_sample_ddim at each LDM timestep."""

    name = "mindone_ddim"
    defaults = dict(eta=0.0, ddim_discretize="uniform")

    def _plan(self, n):
        self.timesteps, steps = self._ldm_plan(n)
        self._coefs = []
        for step in steps:
            c = self._transfer(step)
            c["x0"] = self._x0_coefficients(c["alpha"], c["sigma_t"])
            c["eps"] = prediction.coefficients(self.prediction_type, "eps", c["alpha"], c["sigma_t"])
            self._coefs.append(c)

    def _step(self, model_output, i, sample, noise_fn=None):
        c = self._coefs[i]
        x0 = combine([(c["x0"][0], sample), (c["x0"][1], model_output)])
        eps = combine([(c["eps"][0], sample), (c["eps"][1], model_output)])
        prev = combine([(c["c_x0"], x0), (c["c_eps"], eps)])
        if self.eta > 0:
            prev = prev + float(c["sigma"]) * self._draw(noise_fn, sample)
        return StepOutput(prev, x0)


class CompVisPLMSSampler(_LDMSampler):
    """MindONE ``PLMSSampler.sample(S=n)``: n' + 1 model calls for the n' LDM timesteps (the second
    timestep is called twice: the warm-up's second evaluation, then its own step)."""

    name = "mindone_plms"
    defaults = dict(eta=0.0, ddim_discretize="uniform")

    def _plan(self, n):
        if self.eta != 0:
            raise ValueError("mindone_plms: eta must be 0 for PLMS (as MindONE's make_schedule says); "
                             "use mindone_ddim for eta > 0")
        ts, steps = self._ldm_plan(n)
        # call i belongs to step 0 for i <= 1, else to step i - 1; call 1 is at the next timestep (LDM's
        # t_next, which is the same timestep when there is a single step)
        self.timesteps = np.concatenate([ts[:1], ts[1:2] if len(ts) > 1 else ts[:1], ts[1:]])
        self._steps = []
        for step in steps:
            if step["a_t"] == 0.0:
                raise ValueError("mindone_plms: PLMS divides by alphas_cumprod, which is 0 at timestep "
                                 f"{step['t']} of this zero-terminal-SNR schedule; use mindone_ddim or ddim")
            c = self._transfer(step)
            c["eps_x0"] = prediction.coefficients("eps", "x0", c["alpha"], c["sigma_t"])
            self._steps.append(c)
        abar = self.schedule.alphas_cumprod
        self._to_eps = []
        for t in self.timesteps.astype(np.int64):   # each output is converted at its own call's level
            alpha, sigma = np.sqrt(abar[t]), np.sqrt(1.0 - abar[t])
            if self.prediction_type == "x0" and sigma == 0.0:
                raise ValueError("mindone_plms: an x0 model gives no eps at timestep 0")
            self._to_eps.append(prediction.coefficients(self.prediction_type, "eps", alpha, sigma))

    def _ddim(self, k, x, eps):
        c = self._steps[k]
        x0 = combine([(c["eps_x0"][0], x), (c["eps_x0"][1], eps)])
        return StepOutput(combine([(c["c_x0"], x0), (c["c_eps"], eps)]), x0)

    def _step(self, model_output, i, sample, noise_fn=None):
        st = self._state
        cx, co = self._to_eps[i]
        eps = combine([(cx, sample), (co, model_output)])
        if i == 0:                                   # pseudo improved Euler, first half
            st["warm"] = (sample, eps)
            return self._ddim(0, sample, eps)
        if i == 1:
            if "warm" not in st:                      # restart here: already at this call's level
                a = float(self.schedule.alphas_cumprod[int(self.timesteps[1])])
                cx0, ce0 = prediction.coefficients("eps", "x0", np.sqrt(a), np.sqrt(1.0 - a))
                return StepOutput(sample, combine([(cx0, sample), (ce0, eps)]))
            x, eps0 = st.pop("warm")
            st["old_eps"] = [eps0]
            return self._ddim(0, x, combine([(0.5, eps0), (0.5, eps)]))
        old = st.setdefault("old_eps", [])
        weights = _AB[len(old)]
        combo = combine([(w, e) for w, e in zip(weights, [eps] + old[::-1])])
        old[:] = (old + [eps])[-3:]
        return self._ddim(i - 1, sample, combo)
