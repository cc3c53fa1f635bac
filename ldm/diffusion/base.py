"""What every sampler shares: configuration, the timestep plan, the sampling loop and noise sources.

A sampler never owns the model. ``sample(denoise_fn, x_T)`` calls ``denoise_fn(x, t)`` once per entry of
``sampler.timesteps`` (Heun and PLMS call it more often than ``num_inference_steps``) and updates the
latent with ``step``. All schedule-dependent numbers are computed in float64 on the host when
``set_timesteps`` runs; a step is then a few multiply-adds with Python-float coefficients, which works
on numpy arrays and MindSpore Tensors without host<->device copies.

Diffusers-style use (what the pipeline may do instead of ``sample``)::

    sampler.set_timesteps(n)
    x = x_T * sampler.init_noise_sigma
    for i, t in enumerate(sampler.timesteps):
        out = model(sampler.scale_model_input(x, i), t)
        x, pred_x0 = sampler.step(out, i, x, noise_fn)

``step`` takes the *index* i of the model call (not the timestep value, which repeats for Heun/PLMS).
"""
import numpy as np

from ldm.diffusion import prediction, xp
from ldm.diffusion.schedule import sigma_to_t, spaced_timesteps


class NoiseSource:
    """Standard-normal noise for the stochastic samplers, reproducible from a seed.

    ``seed``: an int (or None) draws whole batches from one generator; a list of ints gives every
    image its own generator (``default_rng([seed, 1])``), so an image's noise does not depend on the
    batch it is drawn in (the pipeline does this). Draws on the host with numpy (a seed gives the
    same images with numpy and MindSpore latents) and converts to the latent's library/dtype.
    Any callable ``noise_fn(like) -> array shaped like ``like```` can be used instead.
    """

    def __init__(self, seed=None):
        self.per_image = isinstance(seed, (list, tuple))
        if self.per_image:
            self.rngs = [np.random.default_rng([int(s) % 2 ** 63, 1]) for s in seed]
        else:
            self.rng = np.random.default_rng(seed)

    def __call__(self, like):
        shape = tuple(like.shape)
        if self.per_image:
            noise = np.stack([rng.standard_normal(shape[1:]) for rng in self.rngs]).astype(np.float32)
        else:
            noise = self.rng.standard_normal(shape, dtype=np.float32)
        return xp.like(noise, like)


class StepOutput(tuple):
    """(prev_sample, pred_x0); pred_x0 may be None where the method never forms it."""

    def __new__(cls, prev_sample, pred_x0=None):
        return super().__new__(cls, (prev_sample, pred_x0))

    @property
    def prev_sample(self):
        return self[0]

    @property
    def pred_x0(self):
        return self[1]


class Sampler:
    """Base class. Subclasses implement ``_plan(n)`` (fill timesteps, scales, coefficients) and ``step``."""

    name = "base"
    stochastic = False
    default_spacing = "linspace"
    solver_grid = False          # DPM-Solver/UniPC lay n+1 grid points (see schedule.spaced_timesteps)
    integer_timesteps = True
    calls_per_step = 1           # model calls per inference step (diffusers' scheduler.order): img2img's step k
                                 # starts at call k * calls_per_step

    def __init__(self, spec=None, schedule=None, timestep_spacing=None, steps_offset=1, prediction_type=None,
                 beta_schedule=None, linear_start=None, linear_end=None, num_train_timesteps=None,
                 rescale_zero_snr=None, **options):
        """``spec``: the model's DiffusionSpec (schedule and prediction type); the keyword fields
        (prediction_type, beta_schedule, ...) override it through ``resolve_spec``'s one rule.
        ``schedule``: an explicit NoiseSchedule (e.g. another implementation's alphas_cumprod)."""
        from ldm.diffusion.spec import DiffusionSpec
        spec = (spec or DiffusionSpec()).replace(
            prediction_type=prediction_type, beta_schedule=beta_schedule, linear_start=linear_start,
            linear_end=linear_end, num_train_timesteps=num_train_timesteps, rescale_zero_snr=rescale_zero_snr)
        self.spec = spec
        self.schedule = schedule if schedule is not None else spec.schedule
        self.prediction_type = spec.prediction_type
        # zero terminal SNR asks for trailing timesteps unless the caller chose a spacing
        self.timestep_spacing = timestep_spacing or spec.sampling_defaults()["timestep_spacing"] \
            or self.default_spacing
        self.steps_offset = int(steps_offset)
        self.options = self._check_options(options)
        self.config = dict(name=self.name, prediction_type=self.prediction_type,
                           timestep_spacing=self.timestep_spacing, steps_offset=self.steps_offset,
                           **self.schedule.config, **self.options)
        self.num_inference_steps = None
        self.timesteps = None
        self.init_noise_sigma = 1.0
        self.final_alpha_cumprod = 1.0   # the noise level the last step lands on (1.0 = clean x0)
        self._input_scales = None

    # ---- configuration
    defaults = {}

    def _check_options(self, options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(self.defaults)) or 'none'}")
        merged = dict(self.defaults)
        merged.update(options)
        return merged

    def __getattr__(self, item):
        options = self.__dict__.get("options", {})
        if item in options:
            return options[item]
        raise AttributeError(item)

    @property
    def num_train_timesteps(self):
        return self.schedule.num_train_timesteps

    def grid(self, n):
        """The n descending (possibly fractional) timesteps of this sampler's spacing."""
        return spaced_timesteps(self.timestep_spacing, n, self.num_train_timesteps, self.steps_offset,
                                solver_grid=self.solver_grid, integer=self.integer_timesteps)

    # ---- diffusers-style API
    def set_timesteps(self, num_inference_steps):
        self.num_inference_steps = int(num_inference_steps)
        self._input_scales = None
        self._plan(self.num_inference_steps)
        self._state = {}
        return self

    def _plan(self, n):
        raise NotImplementedError

    def scale_model_input(self, x, i):
        """What the model sees at call i (k-diffusion samplers divide by sqrt(sigma^2 + 1))."""
        if self._input_scales is None:
            return x
        scale = self._input_scales[i]
        return x if scale == 1.0 else xp.scalar(scale) * x

    def step(self, model_output, i, sample, noise_fn=None):
        """One update after model call i -> StepOutput(prev_sample, pred_x0). Calls must come in order;
        an index that does not follow the previous one (0, or a restart such as img2img's first call)
        starts a new trajectory, so multistep history never leaks between runs."""
        if self.timesteps is None:
            raise ValueError(f"{self.name}: call set_timesteps(n) before step()")
        if i == 0 or self._state.get("last_i", i - 1) != i - 1:
            self._state = {}
        self._state["last_i"] = i
        return self._step(model_output, i, sample, noise_fn)

    def _step(self, model_output, i, sample, noise_fn=None):
        raise NotImplementedError

    def noise_level(self, i):
        """alphas_cumprod of the variance-preserving latent the model sees at call i (for img2img:
        a latent x_vp at this level becomes the sampler's latent as x_vp / scale_model_input factor)."""
        if self._input_scales is not None:
            return float(self._input_scales[i]) ** 2
        sigmas = getattr(self, "sigmas", None)
        if sigmas is not None:
            return 1.0 / (1.0 + float(sigmas[i]) ** 2)
        abar = self.schedule.alphas_cumprod
        return float(np.interp(float(self.timesteps[i]), np.arange(len(abar)), abar))

    # ---- the loop
    def sample(self, denoise_fn, x_T, num_inference_steps=None, callback=None, noise_fn=None, seed=None,
               progress=False):
        """Run the reverse process from standard-normal ``x_T`` [N, C, H, W] (numpy or Tensor).

        denoise_fn(x, t) -> model output (this sampler's prediction_type), t a Python float.
        callback(i, t, x, pred_x0) after each model call (x is the updated latent; pred_x0 may be None).
        noise_fn(like) -> standard normal noise; default NoiseSource(seed).
        """
        if num_inference_steps is not None:
            self.set_timesteps(num_inference_steps)
        x = x_T if self.init_noise_sigma == 1.0 else xp.scalar(self.init_noise_sigma) * x_T
        for x, _ in self.iterate(denoise_fn, x, callback=callback, noise_fn=noise_fn, seed=seed,
                                 progress=progress):
            pass
        return x

    def iterate(self, denoise_fn, x, start=0, callback=None, noise_fn=None, seed=None, progress=False,
                replace=None):
        """Generator over (latent, pred_x0) after every model call from call ``start`` on.

        ``x`` is the latent the sampler holds before call ``start`` (for a fresh run: x_T times
        ``init_noise_sigma``; for img2img: a noised latent at ``noise_level(start)``). ``sample`` and
        the text-to-image pipeline both consume this generator, so they drive samplers alike.
        ``replace(i, x) -> x``: the latent the sampler goes on from after call i (inpainting's blending of
        the known region, ldm.pipeline_inpaint); runs before ``callback``.
        """
        if self.timesteps is None:
            raise ValueError(f"{self.name}: call set_timesteps(n) or pass num_inference_steps")
        self._state = {}
        if noise_fn is None:
            noise_fn = NoiseSource(seed)
        calls = range(start, len(self.timesteps))
        if progress:
            from tqdm import tqdm
            calls = tqdm(calls, desc=f"{self.name} steps", leave=False)
        for i in calls:
            t = float(self.timesteps[i])
            out = denoise_fn(self.scale_model_input(x, i), t)
            x, pred_x0 = self.step(out, i, x, noise_fn)
            if replace is not None:
                x = replace(i, x)
            if callback is not None:
                callback(i, t, x, pred_x0)
            yield x, pred_x0

    # ---- shared helpers
    def _postprocess_x0(self, x0):
        """Optional clip_sample / dynamic thresholding of the predicted x0 (pixel-space models)."""
        opts = self.options
        if opts.get("thresholding"):
            return xp.dynamic_threshold(x0, opts.get("dynamic_thresholding_ratio", 0.995),
                                        opts.get("sample_max_value", 1.0))
        if opts.get("clip_sample"):
            r = xp.scalar(opts.get("clip_sample_range", 1.0))
            return xp.clip(x0, -r, r)
        return x0

    def _x0_coefficients(self, alpha, sigma):
        if alpha == 0.0 and self.prediction_type == "eps":
            raise ValueError(f"{self.name}: an eps model cannot give x0 at zero SNR (t={self.num_train_timesteps - 1} "
                             "with rescale_zero_snr); zero terminal SNR needs prediction_type='v'")
        return prediction.coefficients(self.prediction_type, "x0", alpha, sigma)

    def _draw(self, noise_fn, like):
        if noise_fn is None:
            noise_fn = self._state.setdefault("noise_fn", NoiseSource())
        return noise_fn(like)

    def _alphas_cumprod_for_sigmas(self):
        """abar as the sigma-space samplers see it: a zero terminal abar becomes 2**-24 (diffusers),
        so sigma_max stays finite (about 4096)."""
        abar = self.schedule.alphas_cumprod.copy()
        if abar[-1] == 0.0 or self.schedule.rescale_zero_snr:
            abar[-1] = 2.0 ** -24
        return abar

    def _train_sigmas(self):
        abar = self._alphas_cumprod_for_sigmas()
        return np.sqrt((1.0 - abar) / abar)

    def _interp_sigmas(self, timesteps):
        train = self._train_sigmas()
        return np.interp(timesteps, np.arange(len(train)), train)

    @staticmethod
    def _sigmas_to_t(sigmas, train_sigmas):
        return sigma_to_t(sigmas, np.log(train_sigmas))


def vp_from_sigma(sigma):
    """k-diffusion sigma -> (alpha_t, sigma_t) of the variance-preserving process."""
    sigma = np.asarray(sigma, dtype=np.float64)
    alpha = 1.0 / np.sqrt(sigma ** 2 + 1.0)
    return alpha, sigma * alpha


def log_snr(alpha, sigma):
    """lambda = log(alpha / sigma); +inf where sigma == 0."""
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(sigma)


def combine(terms):
    """sum(c * x for c, x in terms), skipping zero coefficients; coefficients become Python floats."""
    total = None
    terms = list(terms)
    for coef, arr in terms:
        coef = xp.scalar(coef)
        if coef == 0.0 or arr is None:
            continue
        term = arr if coef == 1.0 else coef * arr
        total = term if total is None else total + term
    return total if total is not None else 0.0 * terms[0][1]
