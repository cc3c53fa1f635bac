"""Inpainting: repaint the masked part of an image from a prompt (the Python API behind inpaint.py).

    pipe = InpaintPipeline.from_config("configs/v2-inpaint-inference.yaml", "models/sd_v2_inpaint-f694d5cf.ckpt")
    images = pipe("a red bicycle", image="photo.png", mask="mask.png", steps=30, sampler="dpm_solver",
                  scale=7.5, seed=42)                                   # uint8 (N, H, W, 3)

Two kinds of model, told apart by the UNet's input channels, as diffusers' StableDiffusionInpaintPipeline
tells them apart:

* an inpainting model (SD 2.x / 1.5 inpainting: ``in_channels`` = 2 x latent + 1 = 9): at every call the UNet
  gets ``[latents, mask, masked-image latents]`` concatenated along channels, in that order. The mask is
  binary (1 = repaint), at latent size (nearest: pixel (f*i, f*j) of the image mask, f the VAE factor); the
  masked image is the image with the repaint region set to 0 in [-1, 1] (gray), encoded by the VAE (a
  posterior sample, scaled). With guidance both halves of the batch get the same mask and masked image.
* a text-to-image model (4 channels): latent blending (diffusers' 4-channel path, the maintained successor of
  StableDiffusionInpaintPipelineLegacy): after every model call the kept region of the latent is replaced
  by the image's latents noised to the level of the next call (with the run's own initial noise), and by the
  clean image latents after the last call.

``strength`` is diffusers': 1 starts from pure noise (times the sampler's ``init_noise_sigma``); below 1 the
run keeps int(steps x strength) steps and starts from the image's latents noised to the first kept call.
Image j's initial noise is ``default_rng(seeds[j])``, its VAE posterior noise ``default_rng(seeds[j] + 7919)``
(both encodes of an image use it), stochastic samplers draw per image: the txt2img rules
(:mod:`ldm.pipeline`). Checked against diffusers 0.42.1 in tests/test_inpaint_parity.py.
"""
import os
import re

import mindspore as ms
import numpy as np
from mindspore import ops

from ldm import run_checks
from ldm.errors import CheckpointError, UserError
from ldm.inpaint_inputs import full_mask, prepare, read_image, read_mask
from ldm.io.images import from_uint8
from ldm.pipeline import Text2ImagePipeline, _slices, initial_noise, noised_latents

CONCAT, BLEND = "concat", "blend"


def unet_mode(in_channels, out_channels):
    """CONCAT for an inpainting UNet (in = 2 x out + 1), BLEND for a text-to-image one (in = out)."""
    in_channels, out_channels = int(in_channels), int(out_channels)
    if in_channels == 2 * out_channels + 1:
        return CONCAT
    if in_channels == out_channels:
        return BLEND
    raise UserError(f"a UNet with {in_channels} input and {out_channels} output channels can neither inpaint "
                    f"with a mask input ({2 * out_channels + 1} inputs) nor by latent blending ({out_channels})")


def config_mode(config):
    """unet_mode of a model config (YAML path or dict), read without building the model."""
    from ldm.util import part_params
    unet = part_params(config, "unet_config")
    try:
        return unet_mode(unet.get("in_channels", 4), unet.get("out_channels", 4))
    except (TypeError, ValueError) as exc:
        raise UserError(f"model config: unreadable UNet in_channels/out_channels ({exc})") from exc


def model_mode(model):
    """unet_mode of a built model (a UNet that does not state its channels counts as text to image)."""
    unet = getattr(model, "diffusion_model", None)
    in_channels, out_channels = getattr(unet, "in_channels", None), getattr(unet, "out_channels", None)
    return BLEND if None in (in_channels, out_channels) else unet_mode(in_channels, out_channels)


def pipeline_class(model):
    """The pipeline that draws with ``model``: InpaintPipeline for an inpainting UNet (text to image there
    is inpainting with everything masked), else Text2ImagePipeline."""
    return InpaintPipeline if model_mode(model) == CONCAT else Text2ImagePipeline


_IN_CONV = re.compile(r"input_blocks\.0\.0\.conv\.weight \(checkpoint \((\d+), (\d+)[^)]*\) vs model \((\d+), (\d+)")


def channel_mismatch(exc, config, ckpt_path):
    """A clearer UserError for a CheckpointError whose UNet input conv has another channel count than the
    config's (a text-to-image checkpoint with an inpainting config, or the reverse); None for any other."""
    found = _IN_CONV.search(str(exc))
    if not found:
        return None
    ckpt_in, model_in = int(found.group(2)), int(found.group(4))
    where = config if isinstance(config, (str, os.PathLike)) else "the model config"
    if model_in > ckpt_in:
        return UserError(f"{ckpt_path} is a text-to-image checkpoint (its UNet takes {ckpt_in} input channels) but "
                         f"{where} describes an inpainting UNet ({model_in}: latents, mask, masked-image latents); "
                         "use an inpainting checkpoint, or this checkpoint's text-to-image config with "
                         "--legacy_blend (latent blending)")
    return UserError(f"{ckpt_path} is an inpainting checkpoint (its UNet takes {ckpt_in} input channels) but {where} "
                     f"describes a UNet with {model_in}; use configs/v2-inpaint-inference.yaml (SD 2.x) or "
                     "configs/v1-inpaint-inference.yaml (SD 1.x)")


class InpaintPipeline(Text2ImagePipeline):
    """A LatentDiffusion model plus the inpainting loop; see the module docstring. ``mode`` is CONCAT or BLEND."""

    def __init__(self, model, config=None, ckpt_path=None, compile=True):
        super().__init__(model, config, ckpt_path, compile=compile)
        unet = model.diffusion_model
        self.mode = unet_mode(unet.in_channels, unet.out_channels)
        self.latent_channels = int(unet.out_channels)

    @classmethod
    def from_config(cls, config, ckpt_path=None, **kwargs):
        """As :meth:`Text2ImagePipeline.from_config`; a checkpoint whose UNet input channels differ from the
        config's is one line that says which is which."""
        try:
            return super().from_config(config, ckpt_path, **kwargs)
        except CheckpointError as exc:
            clearer = channel_mismatch(exc, config, ckpt_path)
            if clearer is None:
                raise
            raise clearer from exc

    def generate(self, prompt, image=None, mask=None, negative_prompt="", width=None, height=None, steps=50,
                 sampler="ddim", scale=7.5, guidance_rescale=None, seed=None, seeds=None, num_images=None,
                 latents=None, eta=0.0, sampler_options=None, strength=1.0, intermediates_every=0, progress=False,
                 callback=None, long_prompts=False, init_image=None):
        """Inpaint; returns a GenerationResult (images uint8 (N, H, W, 3)).

        image: path or uint8 (H, W, 3); mask: path, uint8 (H, W) gray (white = repaint), bool or float in [0, 1]
        (thresholded at 0.5). Neither: everything is repainted (text to image with an inpainting model).
        width/height: the output size (default: the image's); image and mask are fitted to it by
        :func:`ldm.inpaint_inputs.prepare` (aug resize: same aspect ratio, else UserError; its notices are
        not logged here: call ``prepare`` to see them). strength: in (0, 1], diffusers' meaning (module
        docstring). ``init_image``: the same as ``image`` (the keyword ldm.pipeline_run passes). A str
        prompt is repeated ``num_images`` times (default: the number of ``seeds`` or ``latents``, else 1).
        Every other argument as :meth:`Text2ImagePipeline.generate`.
        """
        if init_image is not None:
            if image is not None:
                raise UserError("give the image once (image or init_image)")
            image = init_image
        inputs, width, height = self._inputs(image, mask, width, height)
        if num_images is None and seeds is not None and isinstance(prompt, str):
            num_images = len(seeds)
        prompts, negatives = self._prompt_lists(prompt, negative_prompt, num_images, latents)
        n = len(prompts)
        steps = int(run_checks.check_number("steps", steps, 1, self.spec.num_train_timesteps, integer=True))
        run_checks.check_number("scale", scale, -run_checks.SCALE_LIMIT, run_checks.SCALE_LIMIT)
        if guidance_rescale is not None:
            run_checks.check_number("guidance_rescale", guidance_rescale, 0.0, 1.0)
        run_checks.check_strength(strength, steps)
        seeds = self._seeds(seed, seeds, n)
        f = self.latent_factor
        noise = self._noise(seeds, latents, (self.latent_channels, height // f, width // f))
        smp = sampler if not isinstance(sampler, str) else \
            self.make_sampler(sampler, eta=eta, **(sampler_options or {}))
        run_checks.plan_sampler(smp, steps)
        if guidance_rescale is None:
            guidance_rescale = smp.spec.sampling_defaults()["guidance_rescale"]

        guided = float(scale) != 1.0
        context = self.encode_prompts(prompts, negatives if guided else None, long_prompts=long_prompts)
        images = np.repeat(inputs.image[None], n, axis=0)                      # uint8 (n, H, W, 3)
        masks = np.repeat(inputs.mask[None, None], n, axis=0)                  # (n, 1, H, W), 1 = repaint
        mask_latent = np.ascontiguousarray(masks[:, :, ::f, ::f])              # nearest, as torch's interpolate
        image_latents = None
        if self.mode == BLEND or float(strength) < 1.0:
            image_latents = self.encode_images(images, seeds).asnumpy()
        extra = None
        if self.mode == CONCAT:
            masked = from_uint8(images) * (masks < 0.5)
            extra = ops.cat((ms.Tensor(mask_latent), self.encode_images(masked, seeds)), 1)

        kept = min(int(steps * float(strength)), steps)
        start = (steps - kept) * getattr(smp, "calls_per_step", 1)     # diffusers: timesteps[t_start * order:]
        if float(strength) >= 1.0:
            x = ms.Tensor(noise * np.float32(smp.init_noise_sigma))
        else:
            x = ms.Tensor(noised_latents(smp, start, image_latents, noise))
        denoise = self._denoiser(n, context, guided, scale, guidance_rescale, extra)
        replace = None
        if self.mode == BLEND:
            keep = ms.Tensor(1.0 - mask_latent)
            last = len(smp.timesteps) - 1

            def replace(i, x_i):
                known = image_latents if i == last else noised_latents(smp, i + 1, image_latents, noise)
                return keep * ms.Tensor(known) + (1.0 - keep) * x_i

        return self._sample(smp, denoise, x, start, seeds, intermediates_every, callback, progress, replace)

    # ---- pieces of generate
    def _inputs(self, image, mask, width, height):
        """(InpaintInputs, width, height): read and fitted image and mask, or the everything-masked inputs;
        the size (default: the image's, or the other side at its aspect ratio) checked against the model."""
        if (image is None) != (mask is None):
            raise UserError("inpainting needs an image and a mask (or neither: everything is repainted)")
        if image is None:
            width, height = width or 512, height or 512
            self.check_size(width, height, self.geometry)
            return full_mask(width, height), width, height
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image)
        if isinstance(mask, (str, os.PathLike)):
            mask = read_mask(mask)
        image = np.asarray(image)
        if image.ndim != 3:
            raise UserError(f"the image must be one (H, W, 3) array, got shape {image.shape}")
        width = width or (image.shape[1] if height is None else int(round(height * image.shape[1] / image.shape[0])))
        height = height or int(round(width * image.shape[0] / image.shape[1]))
        self.check_size(width, height, self.geometry)
        return prepare(image, mask, width, height), width, height

    @staticmethod
    def _noise(seeds, latents, shape):
        if latents is None:
            return initial_noise(seeds, shape)
        noise = np.asarray(latents, dtype=np.float32)
        if noise.shape != (len(seeds),) + shape:
            raise UserError(f"initial latents have shape {noise.shape}, expected {(len(seeds),) + shape}")
        return noise

    def _denoiser(self, n, context, guided, scale, guidance_rescale, extra):
        """denoise(x, t) for the sampler: the (guided) UNet call, ``unet_batch`` images at a time, with the
        mask and masked-image latents ``extra`` appended to the latents' channels (inpainting models)."""
        scale_t = ms.Tensor(float(scale), ms.float32)
        rescale_t = ms.Tensor(float(guidance_rescale), ms.float32) if guidance_rescale else None
        slices = _slices(n, self.unet_batch)
        whole = len(slices) == 1
        contexts = [context if whole else
                    (ops.cat((context[a:b], context[n + a:n + b])) if guided else context[a:b]) for a, b in slices]
        extras = [extra if (whole or extra is None) else extra[a:b] for a, b in slices]

        def denoise(x_in, t):
            outs = []
            for (a, b), ctx, ext in zip(slices, contexts, extras):
                x_part = x_in if whole else x_in[a:b]
                if ext is not None:                 # [latents, mask, masked-image latents], diffusers' order
                    x_part = ops.cat((x_part, ext), 1)
                t_part = ms.Tensor(np.full((b - a,), t, dtype=np.float32))
                outs.append(self._run("guided", x_part, t_part, ctx, scale_t, rescale_t) if guided
                            else self._run("plain", x_part, t_part, ctx))
            return outs[0] if whole else ops.cat(outs, 0)
        return denoise
