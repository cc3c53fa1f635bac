"""Text -> image with ControlNet guidance (diffusers' StableDiffusionControlNetPipeline), every sampler of ours.

    pipe = ControlNetPipeline.from_config("configs/v1-controlnet-inference.yaml", "models/sd_v1.5-d0ab7146.ckpt",
                                          controlnets=["models/control_v11p_sd15_canny.pth"])
    images = pipe("a bird", control_image="edges.png", controlnet_conditioning_scale=1.0, width=512, height=512,
                  steps=20, sampler="ddim", scale=9.0, seed=42)            # uint8 (N, H, W, 3)

Per model call, each ControlNet k reads the latents, timestep, text context and its control image (a hint in
[0, 1], :mod:`ldm.control_inputs`) and returns one residual per UNet skip plus one for the middle block; they are
multiplied by ``controlnet_conditioning_scale[k]`` (in guess mode by diffusers' ``logspace(-1, 0)`` ramp times it,
:func:`ldm.models.controlnet.control_scales`) and by ``keep``, which is 0 outside the ControlNet's share of the
steps [``control_guidance_start``, ``control_guidance_end``] (diffusers' rule over the sampler's model calls),
summed over ControlNets and added to the UNet's skips. With classifier-free guidance the ControlNets see both
halves of the 2N batch (control image repeated), or, in guess mode, only the conditional half (the unconditional
half gets no control: diffusers' zeros, lllyasviel's ``c_concat=None``). A ControlNet with
``global_pool_conditions`` switches guess mode on, as diffusers does. Every sampler runs unchanged: the control
enters only through the denoiser, which is compiled with the UNet into one graph per (guidance, guess mode).
"""
import os

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ldm import run_checks
from ldm.diffusion.guidance import apply_guidance
from ldm.errors import UserError
from ldm.models.controlnet import control_scales
from ldm.pipeline import Text2ImagePipeline


class ControlledDenoiser(nn.Cell):
    """The UNet with the residuals of K ControlNets, one compiled call:
    ``construct(x (N,C,h,w), t (N,), context, hints (K x (N,3,H,W)), scales (K, R), scale, rescale)``.

    ``guided``: context is (2N, L, D), unconditional first, and the output is the guided mix
    (:func:`ldm.diffusion.guidance.apply_guidance`); ``guess_mode`` (guided only): the ControlNets run on the
    conditional half and the unconditional half gets zero residuals. ``scales[k, j]`` weighs residual j of
    ControlNet k.
    """

    def __init__(self, unet, controlnets, guided, guess_mode):
        super().__init__(auto_prefix=False)
        self.unet = unet
        self.controlnets = controlnets
        self.guided = bool(guided)
        self.guess_mode = bool(guess_mode) and self.guided

    def construct(self, x, t, context, hints, scales, scale=None, rescale=None):
        n = x.shape[0]
        x_in, t_in = x, t
        if self.guided:
            x_in, t_in = ops.cat((x, x), 0), ops.cat((t, t), 0)
        control = None
        for k, net in enumerate(self.controlnets):
            if self.guess_mode:
                residuals = net(x, t, context[n:], hints[k])
            elif self.guided:
                residuals = net(x_in, t_in, context, ops.cat((hints[k], hints[k]), 0))
            else:
                residuals = net(x, t, context, hints[k])
            summed = ()
            for j, r in enumerate(residuals):
                r = r.astype(ms.float32) * scales[k, j]
                if self.guess_mode:
                    r = ops.cat((ops.zeros_like(r), r), 0)
                summed = summed + ((r if control is None else control[j] + r),)
            control = summed
        out = self.unet(x_in, t_in, context, control)
        if self.guided:
            uncond, cond = ops.chunk(out, 2, 0)
            return apply_guidance(uncond, cond, scale, rescale)
        return out


def _per_net(value, k, name):
    """A value per ControlNet: a scalar for all, or a list of k."""
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise UserError(f"{len(value)} values of {name} for {k} ControlNet(s): give one, or one per ControlNet")
        return [float(v) for v in value]
    return [float(value)] * k


def guidance_keep(i, total, start, end):
    """diffusers' ``controlnet_keep``: 1 when model call i of ``total`` lies in [start, end] of the run, else 0."""
    return 1.0 - float(i / total < start or (i + 1) / total > end)


def check_control_numbers(scales, starts, ends, what=("--controlnet_conditioning_scale", "--control_guidance_start",
                                                      "--control_guidance_end")):
    """Finite scales in [-SCALE_LIMIT, SCALE_LIMIT], guidance windows 0 <= start < end <= 1 (diffusers' rule)."""
    for s in scales:
        run_checks.check_number(what[0], s, -run_checks.SCALE_LIMIT, run_checks.SCALE_LIMIT)
    for s, e in zip(starts, ends):
        run_checks.check_number(what[1], s, 0.0, 1.0)
        run_checks.check_number(what[2], e, 0.0, 1.0)
        if s >= e:
            raise UserError(f"{what[1]} {s} must be below {what[2]} {e}")


class ControlNetPipeline(Text2ImagePipeline):
    """A LatentDiffusion model, one or more ControlNets and the sampling loop; see the module docstring.
    :meth:`generate` takes Text2ImagePipeline's arguments plus the control ones."""

    def __init__(self, model, controlnets, config=None, ckpt_path=None, compile=True):
        super().__init__(model, config, ckpt_path, compile=compile)
        controlnets = list(controlnets)
        if not controlnets:
            raise UserError("a ControlNet pipeline needs at least one ControlNet")
        unet = model.diffusion_model
        for net in controlnets:
            if net.in_channels != unet.in_channels or net.model_channels != unet.model_channels:
                raise UserError(f"a ControlNet of {net.in_channels} latent channels and width {net.model_channels} "
                                f"does not fit this UNet ({unet.in_channels}, {unet.model_channels})")
            if net.latent_factor != self.latent_factor:
                raise UserError(f"the ControlNet's hint encoder downsamples by {net.latent_factor}, the VAE by "
                                f"{self.latent_factor}: they must agree")
            net.set_train(False)
        self.controlnets = nn.CellList(controlnets)      # unique parameter names (0., 1., ...) for one graph
        self._compile = compile
        self._control = None            # the control inputs of the generation under way

    @classmethod
    def from_config(cls, config, ckpt_path=None, controlnets=None, lora_path=None, lora_scale=1.0, compile=True,
                    adopt_recorded_spec=False, lora_prefixes=None, attention=None, **spec_overrides):
        """Build from a model YAML and checkpoint (as Text2ImagePipeline) plus ``controlnets``: paths (any format
        of :mod:`ldm.convert.controlnet`) or ControlNetModel objects. None: the checkpoint itself must hold one
        (lllyasviel's full ``control_sd15_*.pth``, MindONE's cldm ``.ckpt``)."""
        from ldm.convert.controlnet import load_controlnet
        from ldm.models.attention_ops import apply_settings
        from ldm.util import load_config
        cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
        base = Text2ImagePipeline.from_config(cfg, ckpt_path, lora_path=lora_path, lora_scale=lora_scale,
                                              compile=False, adopt_recorded_spec=adopt_recorded_spec,
                                              lora_prefixes=lora_prefixes, attention=attention, **spec_overrides)
        sources = list(controlnets) if controlnets else ([ckpt_path] if ckpt_path else [])
        if not sources:
            raise UserError("no ControlNet given (and no checkpoint that could hold one)")
        nets = [src if isinstance(src, nn.Cell) else load_controlnet(src, cfg) for src in sources]
        if attention is not None:
            for net in nets:
                apply_settings(net, attention)
        return cls(base.model, nets, cfg, ckpt_path, compile=compile)

    # ---- generation
    def generate(self, prompt, control_image=None, controlnet_conditioning_scale=1.0, guess_mode=False,
                 control_guidance_start=0.0, control_guidance_end=1.0, **kwargs):
        """Text2ImagePipeline.generate plus: ``control_image``: for one ControlNet an image (path, PIL, uint8
        (H, W, 3)) or N of them (uint8 (N, H, W, 3) or a list); for several a list with one such entry per
        ControlNet. Other sizes of the output's aspect ratio are resized (Lanczos); other aspect ratios are
        refused. ``controlnet_conditioning_scale``, ``control_guidance_start``/``_end``: one value or one per
        ControlNet. ``guess_mode``: diffusers' (see the module docstring)."""
        from ldm.control_inputs import to_hint
        k = len(self.controlnets)
        if control_image is None:
            raise UserError("no control image given")
        images = [control_image] if k == 1 else control_image
        if not isinstance(images, (list, tuple)) or len(images) != k:
            raise UserError(f"{len(images) if isinstance(images, (list, tuple)) else 1} control image entries for "
                            f"{k} ControlNets: give a list with one per ControlNet")
        scales = _per_net(controlnet_conditioning_scale, k, "controlnet_conditioning_scale")
        starts = _per_net(control_guidance_start, k, "control_guidance_start")
        ends = _per_net(control_guidance_end, k, "control_guidance_end")
        check_control_numbers(scales, starts, ends, ("controlnet_conditioning_scale", "control_guidance_start",
                                                     "control_guidance_end"))
        width, height = kwargs.get("width", 512), kwargs.get("height", 512)
        self.check_size(width, height, self.geometry)
        prompts, _ = self._prompt_lists(prompt, kwargs.get("negative_prompt", ""), kwargs.get("num_images"),
                                        kwargs.get("latents"))
        hints = [to_hint(img, len(prompts), width, height) for img in images]
        guess = bool(guess_mode) or any(net.global_pool_conditions for net in self.controlnets)
        self._control = dict(hints=hints, scales=scales, starts=starts, ends=ends, guess=guess)
        try:
            return super().generate(prompt, **kwargs)
        finally:
            self._control = None

    def _model_call(self, smp, start, guided, scale, rescale):
        """The controlled model call (the base one when no control inputs are set)."""
        state = self._control
        if state is None:
            return super()._model_call(smp, start, guided, scale, rescale)
        name = self._denoiser(guided, state["guess"])
        total = len(smp.timesteps) - start
        ramps = [control_scales(net.num_residuals, s, state["guess"] and not net.global_pool_conditions)
                 for net, s in zip(self.controlnets, state["scales"])]
        hints = {}

        def call(x, t, context, i, rows):
            if rows not in hints:
                # mutable: a tuple of tensors is otherwise a constant of the graph (a recompile per image)
                hints[rows] = ms.mutable(tuple(ms.Tensor(h[rows[0]:rows[1]]) for h in state["hints"]))
            keep = [guidance_keep(i - start, total, s, e) for s, e in zip(state["starts"], state["ends"])]
            weights = ms.Tensor(np.stack([r * kp for r, kp in zip(ramps, keep)]).astype(np.float32))
            if guided:
                return self._run(name, x, t, context, hints[rows], weights, scale, rescale)
            return self._run(name, x, t, context, hints[rows], weights)
        return call

    def _denoiser(self, guided, guess):
        """The name of the (compiled) controlled call for (guided, guess mode), created on first use."""
        name = f"control_{'guided' if guided else 'plain'}{'_guess' if guided and guess else ''}"
        if name not in self._calls:
            cell = ControlledDenoiser(self.model.diffusion_model, self.controlnets, guided, guess)
            self._eager[name] = cell
            self._calls[name] = ms.jit(cell.construct) if self._compile else cell
        return name
