"""Text -> image (and image -> image) with a LatentDiffusion model: the Python API behind text_to_image.py.

    pipe = Text2ImagePipeline.from_config("configs/v2-vpred-inference.yaml", "models/sd_v2_768_v-e12e3a9b.ckpt")
    images = pipe("a red bicycle", negative_prompt="blurry", width=768, height=768, steps=15,
                  sampler="dpm_solver", scale=9.0, seed=42)            # uint8 (N, H, W, 3)

Behaviour matches diffusers' StableDiffusionPipeline: unit-variance initial latents are multiplied by
the sampler's ``init_noise_sigma``; classifier-free guidance runs the unconditional and the
conditional half as one batch of 2N (uncond first) and mixes ``uncond + scale * (cond - uncond)``,
optionally rescaled (guidance_rescale, Lin et al. 2023 eq. 16); the VAE output is mapped to uint8 with
``round(clip(x / 2 + 0.5, 0, 1) * 255)``. The guided UNet call is compiled once per input shape
(``ms.jit``), so a sampling step costs one graph launch.

Randomness is per image: image j's initial noise comes from ``numpy.random.default_rng(seeds[j])``
and its stochastic-sampler noise from its own generator, so an image does not depend on which batch
it was generated in (resumed runs and different --n_samples give the same pictures).
"""
import dataclasses
import logging
import os

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ldm import run_checks
from ldm.diffusion.base import NoiseSource
from ldm.diffusion.guidance import apply_guidance
from ldm.errors import UserError
from ldm.io.images import from_uint8, to_uint8
from ldm.util import load_config

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- the compiled model calls
class GuidedDenoiser(nn.Cell):
    """One UNet evaluation with classifier-free guidance: x (N,C,h,w), t (N,), context (2N,77,D) -> (N,C,h,w).

    ``context`` holds the unconditional embeddings first, then the conditional ones (as diffusers);
    the mix (and guidance rescale when ``rescale`` is not None) is :func:`ldm.diffusion.guidance.apply_guidance`.
    """

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, x, t, context, scale, rescale):
        x2 = ops.cat((x, x), 0)
        t2 = ops.cat((t, t), 0)
        out = self.model.apply_model(x2, t2, context)
        uncond, cond = ops.chunk(out, 2, 0)
        return apply_guidance(uncond, cond, scale, rescale)


class PlainDenoiser(nn.Cell):
    """One UNet evaluation without guidance (scale == 1): x (N,C,h,w), t (N,), context (N,77,D)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, x, t, context):
        return self.model.apply_model(x, t, context)


def noised_latents(smp, i, x0, noise):
    """The latent sampler ``smp`` holds before call i for clean latents x0 and unit noise (numpy, float32):
    x0 noised to ``smp.noise_level(i)``, as diffusers' ``scheduler.add_noise`` does (img2img's start,
    inpainting's known region)."""
    abar = smp.noise_level(i)
    x = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * noise
    if float(smp.init_noise_sigma) != 1.0:       # sigma-space samplers hold x0 + sigma * eps
        x = x / np.sqrt(abar)
    return x.astype(np.float32)


def initial_noise(seeds, shape):
    """(len(seeds), *shape) unit-variance float32 noise, image j from default_rng(seeds[j])."""
    return np.stack([np.random.default_rng(int(s) % 2 ** 63).standard_normal(shape)
                     for s in seeds]).astype(np.float32)


@dataclasses.dataclass
class GenerationResult:
    images: np.ndarray                 # uint8 (N, H, W, 3)
    seeds: list                        # the seed of each image
    intermediates: list                # [(step index, uint8 (N, H, W, 3) of the predicted x0)]
    latents: np.ndarray = None         # float32 (N, C, h, w): the final latents, before decoding


# ---------------------------------------------------------------- the pipeline
class Text2ImagePipeline:
    """A LatentDiffusion model plus the sampling loop; see the module docstring."""

    def __init__(self, model, config=None, ckpt_path=None, compile=True):
        self.model = model
        self.config = config or {}
        self.ckpt_path = ckpt_path
        model.set_train(False)
        self.geometry = self._geometry()
        self.latent_channels, self.latent_factor = self.geometry.latent_channels, self.geometry.vae_factor
        # every network call compiled once per input shape (ms.jit); eager versions kept as fallback
        self._eager = dict(guided=GuidedDenoiser(model), plain=PlainDenoiser(model),
                           text=model.get_learned_conditioning, decode=model.decode_first_stage,
                           encode=model.encode_first_stage)
        self._calls = {name: (ms.jit(fn.construct if isinstance(fn, nn.Cell) else fn) if compile else fn)
                       for name, fn in self._eager.items()}
        self.unet_batch = None      # images per UNet call (None: all); see set_micro_batches
        self.vae_batch = None       # images per VAE decode (None: all)

    def set_micro_batches(self, unet=None, vae=None):
        """Run the UNet on ``unet`` images at a time (with guidance: 2 x unet samples) and decode ``vae``
        images at a time (None: the whole batch). Images are independent, so the pictures stay the same up to
        the CPU kernels' rounding for another batch size (at most 1/255 measured);
        peak memory falls with the slice (text_to_image.py picks them from ldm.memory_estimate.plan
        when the whole batch would not fit)."""
        for name, value in (("unet", unet), ("vae", vae)):
            if value is not None:
                run_checks.check_number(f"{name} micro-batch", value, 1, integer=True)
        self.unet_batch, self.vae_batch = unet, vae

    @classmethod
    def from_config(cls, config, ckpt_path=None, lora_path=None, lora_scale=1.0, compile=True,
                    adopt_recorded_spec=False, lora_prefixes=None, attention=None, **spec_overrides):
        """Build from a model YAML (path or dict) and a checkpoint (any format ldm.convert reads).

        A checkpoint from our training records its DiffusionSpec: the config must agree with it, or
        with ``adopt_recorded_spec`` the recorded spec replaces the YAML's (text_to_image.py does this
        when no --config is given). ``spec_overrides`` (e.g. rescale_zero_snr=True) win over both.
        ``lora_prefixes``: load only the LoRA adapters under these name prefixes (None: all).
        ``attention``: an :class:`ldm.models.attention_ops.AttentionSettings` that replaces the config's
        attention keys (standard, chunked, flash or auto; see text_to_image.py --attention).
        """
        from ldm.convert.checkpoint import load_model
        cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
        if ckpt_path is not None and not os.path.exists(ckpt_path):
            raise UserError(f"checkpoint not found: {ckpt_path}")
        model = load_model(config, ckpt_path, adopt_recorded_spec=adopt_recorded_spec, **spec_overrides)
        if lora_path:
            from ldm.models.lora import load_lora
            if not os.path.exists(lora_path):
                raise UserError(f"LoRA checkpoint not found: {lora_path}")
            load_lora(model, lora_path, lora_scale, prefixes=lora_prefixes)
        if attention is not None:
            model.set_attention(attention)
        return cls(model, cfg, ckpt_path, compile=compile)

    @property
    def spec(self):
        """The model's DiffusionSpec (schedule, prediction type, zero SNR, latent scale)."""
        return self.model.spec

    @property
    def prediction_type(self):
        return self.model.prediction_type

    def _geometry(self):
        """Latent channels, VAE factor and UNet levels from the config (without one: SD's factor 8 and
        no UNet constraint on the size, as before configs were required)."""
        if not self.config:
            return run_checks.ModelGeometry(unet_levels=1)
        return run_checks.geometry_from_config(self.config)

    # ---- samplers
    def make_sampler(self, name, eta=0.0, **overrides):
        """Sampler ``name`` on this model's DiffusionSpec. ``overrides``: sampler options, or spec
        fields (prediction_type, rescale_zero_snr, ...) that win over the model's (None = not given)."""
        run_checks.check_number("eta", eta, 0.0, run_checks.ETA_LIMIT)
        return run_checks.build_sampler(self.spec, name, eta, **overrides)

    # ---- text
    def encode_prompts(self, prompts, negative_prompts=None, long_prompts=False):
        """Context for the UNet: (N,77,D), or (2N,77,D) with the negative prompts' embeddings first.

        ``long_prompts``: MindONE's --support_long_prompts, prompts beyond 77 tokens are encoded in
        chunks and the context is (N or 2N, k*77, D) (:mod:`ldm.models.long_prompt`); else they are cut.
        """
        if long_prompts:
            from ldm.models.long_prompt import encode_chunked, long_prompt_ids
            ids, neg_ids = long_prompt_ids(self._tokenizer(), list(prompts),
                                           None if negative_prompts is None else list(negative_prompts))
            if neg_ids is not None:
                ids = np.concatenate([neg_ids, ids], axis=0)
            return encode_chunked(lambda t: self._run("text", t), ms.Tensor(ids))
        texts = list(prompts) if negative_prompts is None else list(negative_prompts) + list(prompts)
        tokens = ms.Tensor(np.asarray(self.model.tokenize(texts), dtype=np.int32))
        return self._run("text", tokens)

    def _tokenizer(self):
        encoder = self.model.cond_stage_model
        if encoder is None:
            raise UserError("this model was built without a text encoder (no cond_stage_config in the config)")
        return encoder.tokenizer

    # ---- images <-> latents
    def decode(self, z):
        """Latents (N,C,h,w) -> uint8 images (N,H,W,3), ``vae_batch`` images per VAE call."""
        parts = [to_uint8(self._run("decode", z[a:b]).asnumpy()) for a, b in _slices(z.shape[0], self.vae_batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def encode_images(self, images, seeds):
        """uint8 (N,H,W,3) (or float32 (N,3,H,W) in [-1, 1]) -> scaled latents, sampling the VAE posterior
        with per-image noise: image j's from default_rng(seeds[j] + 7919)."""
        images = np.asarray(images)
        pixels = from_uint8(images) if images.dtype == np.uint8 else images.astype(np.float32)
        mean, logvar = self._run("encode", ms.Tensor(pixels))
        noise = initial_noise([s + 7919 for s in seeds], tuple(mean.shape[1:]))
        return self.model.get_first_stage_encoding(mean, logvar, ms.Tensor(noise))

    # ---- generation
    def __call__(self, prompt, **kwargs):
        """Generate; returns uint8 images (N, H, W, 3). Arguments: see :meth:`generate`."""
        return self.generate(prompt, **kwargs).images

    def generate(self, prompt, negative_prompt="", width=512, height=512, steps=50, sampler="ddim",
                 scale=7.5, guidance_rescale=None, seed=None, seeds=None, num_images=None, latents=None,
                 eta=0.0, sampler_options=None, init_image=None, strength=0.8, intermediates_every=0,
                 progress=False, callback=None, long_prompts=False):
        """Run the sampler and decode.

        prompt: str or list of N prompts (a str is repeated ``num_images`` times, default 1 or the
        number of ``latents``). negative_prompt: str or list (used when scale != 1).
        seed: image j gets seed + j (seeds: explicit per-image list; neither: fresh entropy).
        latents: optional unit-variance initial noise, numpy (N, C, H/f, W/f); it is multiplied by the
        sampler's init_noise_sigma, as diffusers does. sampler: a name of ldm.diffusion.samplers
        (or a sampler object); sampler_options: overrides such as timestep_spacing, rescale_zero_snr.
        guidance_rescale: phi; None = the spec's choice (0.7 with zero terminal SNR, else 0).
        init_image: uint8 (H, W, 3) / (N, H, W, 3) or a path -> img2img, keeping (1 - strength) of
        the schedule. intermediates_every=k: also decode every k-th step's predicted x0.
        callback(step, timestep, latents, pred_x0): called once per model call (diffusers' per-step
        callback; pred_x0 may be None for samplers that never form it). long_prompts: encode prompts
        beyond 77 tokens in chunks (MindONE's --support_long_prompts) instead of cutting them.
        """
        prompts, negatives = self._prompt_lists(prompt, negative_prompt, num_images, latents)
        n = len(prompts)
        self.check_size(width, height, self.geometry)
        run_checks.check_number("steps", steps, 1, self.spec.num_train_timesteps, integer=True)
        run_checks.check_number("scale", scale, -run_checks.SCALE_LIMIT, run_checks.SCALE_LIMIT)
        if guidance_rescale is not None:
            run_checks.check_number("guidance_rescale", guidance_rescale, 0.0, 1.0)
        if init_image is not None:
            run_checks.check_strength(strength, int(steps))
        seeds = self._seeds(seed, seeds, n)
        shape = (self.latent_channels, height // self.latent_factor, width // self.latent_factor)
        if latents is None:
            noise = initial_noise(seeds, shape)
        else:
            noise = np.asarray(latents, dtype=np.float32)
            if noise.shape != (n,) + shape:
                raise UserError(f"initial latents have shape {noise.shape}, expected {(n,) + shape} "
                                f"(N, C, H/{self.latent_factor}, W/{self.latent_factor})")
        smp = sampler if not isinstance(sampler, str) else \
            self.make_sampler(sampler, eta=eta, **(sampler_options or {}))
        run_checks.plan_sampler(smp, int(steps))
        if guidance_rescale is None:
            guidance_rescale = smp.spec.sampling_defaults()["guidance_rescale"]

        guided = float(scale) != 1.0
        context = self.encode_prompts(prompts, negatives if guided else None, long_prompts=long_prompts)
        x, start = self._start(smp, noise, seeds, init_image, strength, width, height, int(steps))
        scale_t = ms.Tensor(float(scale), ms.float32)
        rescale_t = ms.Tensor(float(guidance_rescale), ms.float32) if guidance_rescale else None

        slices = _slices(n, self.unet_batch)
        # each slice's context: its negatives then its prompts (the guided call's layout), made once
        contexts = [context if len(slices) == 1 else
                    (ops.cat((context[a:b], context[n + a:n + b])) if guided else context[a:b]) for a, b in slices]

        model_call = self._model_call(smp, start, guided, scale_t, rescale_t)
        calls = iter(range(start, len(smp.timesteps)))       # the sampler calls denoise once per call index

        def denoise(x_in, t):
            i, outs = next(calls), []
            for (a, b), ctx in zip(slices, contexts):
                x_part = x_in if len(slices) == 1 else x_in[a:b]
                t_part = ms.Tensor(np.full((b - a,), t, dtype=np.float32))
                outs.append(model_call(x_part, t_part, ctx, i, (a, b)))
            return outs[0] if len(outs) == 1 else ops.cat(outs, 0)

        return self._sample(smp, denoise, x, start, seeds, intermediates_every, callback, progress)

    def _sample(self, smp, denoise, x, start, seeds, intermediates_every=0, callback=None, progress=False,
                replace=None):
        """Run sampler ``smp`` from call ``start`` and decode: the one sampling loop of every pipeline
        (intermediates every k steps, the per-step callback, ``replace(i, x_i)`` of inpainting's blending)."""
        intermediates = []

        def after_step(i, t, x_i, pred_x0):
            if intermediates_every and pred_x0 is not None and (i - start + 1) % intermediates_every == 0:
                intermediates.append((i, self.decode(pred_x0)))
            if callback is not None:
                callback(i, t, x_i, pred_x0)

        for x, _ in smp.iterate(denoise, x, start=start, callback=after_step, noise_fn=NoiseSource(seeds),
                                progress=progress, replace=replace):
            pass
        return GenerationResult(self.decode(x), seeds, intermediates, x.asnumpy())

    def _model_call(self, smp, start, guided, scale, rescale):
        """``call(x, t, context, i, rows)``: the (guided) model on one micro-batch at model call ``i`` of sampler
        ``smp`` (the run's first call is ``start``; ``rows``: the (start, stop) of its images in the batch), made
        once per generation. :mod:`ldm.pipeline_controlnet` returns one that adds the ControlNet residuals."""
        if guided:
            return lambda x, t, context, i, rows: self._run("guided", x, t, context, scale, rescale)
        return lambda x, t, context, i, rows: self._run("plain", x, t, context)

    def _run(self, name, *args):
        """A (compiled) network call; if graph compilation fails, warn once and run that call eagerly."""
        fn = self._calls[name]
        try:
            return fn(*args)
        except (ValueError, TypeError, RuntimeError) as exc:
            if fn is self._eager[name]:
                raise
            logger.warning("ms.jit could not compile the %s call (%s); running it in PyNative mode, which is "
                           "slower", name, str(exc).strip().splitlines()[0][:200])
            self._calls[name] = self._eager[name]
            return self._eager[name](*args)

    def _start(self, smp, noise, seeds, init_image, strength, width, height, steps):
        """(first latent, index of the first model call): pure noise, or a noised encoded image."""
        if init_image is None:
            return ms.Tensor(noise * np.float32(smp.init_noise_sigma)), 0
        if not 0.0 < float(strength) <= 1.0:
            raise UserError(f"strength must be in (0, 1], got {strength}")
        images = self._init_images(init_image, width, height, len(seeds))
        x0 = self.encode_images(images, seeds)
        kept = min(int(steps * float(strength)), steps)
        if kept == 0:
            raise UserError(f"strength {strength} with {steps} steps leaves no step to run; raise either")
        start = (steps - kept) * getattr(smp, "calls_per_step", 1)     # diffusers: timesteps[t_start * order:]
        return ms.Tensor(noised_latents(smp, start, x0.asnumpy(), noise)), start

    @staticmethod
    def _init_images(init_image, width, height, n):
        from ldm.io.images import load_image
        if isinstance(init_image, (str, os.PathLike)):
            if not os.path.isfile(init_image):
                raise UserError(f"init image not found: {init_image}")
            init_image = load_image(init_image, width, height)
        images = np.asarray(init_image, dtype=np.uint8)
        if images.ndim == 3:
            images = np.repeat(images[None], n, axis=0)
        if images.shape != (n, height, width, 3):
            raise UserError(f"init image has shape {images.shape[1:]}, expected {(height, width, 3)}")
        return images

    # ---- argument checks
    @staticmethod
    def check_size(width, height, geometry=None):
        """W, H: positive multiples of the model's size multiple (no geometry: the VAE factor 8 alone)."""
        run_checks.check_size(width, height, geometry or run_checks.ModelGeometry(unet_levels=1))

    @staticmethod
    def _prompt_lists(prompt, negative_prompt, num_images, latents):
        if isinstance(prompt, str):
            n = num_images or (len(latents) if latents is not None else 1)
            prompts = [prompt] * n
        else:
            prompts = list(prompt)
            if not prompts:
                raise UserError("no prompts given")
        if negative_prompt is None:
            negative_prompt = ""
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise UserError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        return prompts, negatives

    @staticmethod
    def _seeds(seed, seeds, n):
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if len(seeds) != n:
                raise UserError(f"{len(seeds)} seeds for {n} images")
        else:
            if seed is None:
                seed = int(np.random.SeedSequence().generate_state(1)[0])
            seeds = [int(seed) + j for j in range(n)]
        for s in seeds:
            run_checks.check_number("seed", s, 0, run_checks.SEED_LIMIT - 1, integer=True)
        return seeds


def _slices(n, size):
    """[(start, stop)] covering range(n) in pieces of ``size`` (None: one piece)."""
    size = n if not size else int(size)
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def validation_sampler(compile_graphs, image_size):
    """The ``make_sampler(model, config)`` that training gets for its validation images (ldm.train never
    imports this module): a pipeline on the training model, with the pipeline's size rule checked for
    ``image_size`` when it is built rather than at the first validation."""
    def make(model, config):
        from ldm.pipeline_inpaint import pipeline_class        # an inpainting UNet draws with its own pipeline
        pipe = pipeline_class(model)(model, config, compile=compile_graphs)
        try:
            geometry = getattr(pipe, "geometry", None)      # the model's own size multiple, where known
            pipe.check_size(image_size, image_size, *((geometry,) if geometry is not None else ()))
        except UserError as exc:
            raise UserError(f"validation images at image_size {image_size}: {exc}") from exc
        return pipe
    return make
