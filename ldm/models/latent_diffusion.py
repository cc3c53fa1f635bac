"""LatentDiffusion: the UNet, the VAE and the text encoder plus the diffusion spec, built from a model YAML.

Only the networks and the latent <-> image / text -> context plumbing live here; the diffusion process
(schedule, prediction type, latent scale) is the model's :class:`ldm.diffusion.spec.DiffusionSpec`,
training is in :mod:`ldm.train`. Parameter names get MindONE's prefixes ``model.diffusion_model.``,
``first_stage_model.``, ``cond_stage_model.``.
"""
from mindspore import nn
from mindspore.nn.utils import no_init_parameters

from ldm.diffusion.spec import YAML_KEYS, DiffusionSpec, resolve_spec
from ldm.errors import UserError
from ldm.models.attention_ops import AttentionSettings, apply_settings
from ldm.util import instantiate_from_config, model_section


class DiffusionWrapper(nn.Cell):
    """Holds the UNet as ``diffusion_model`` (so names read ``model.diffusion_model.*`` as in MindONE)."""

    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet

    def construct(self, x, t, context=None):
        return self.diffusion_model(x, t, context)


class LatentDiffusion(nn.Cell):
    """Stable Diffusion model container. ``construct(x_t, t, context)`` = :meth:`apply_model`.

    ``spec`` (a DiffusionSpec, made by :func:`build_model` from the YAML) says what the UNet predicts,
    on which noise schedule, and the latent scale; ``prediction_type``, ``schedule`` and
    ``scale_factor`` read from it, and :meth:`set_spec` is the only way to change it. The VAE is
    always frozen; the text encoder too unless ``cond_stage_trainable``. Other LDM/MindONE keys
    (first_stage_key, monitor, ...) are ignored.
    """

    def __init__(self, unet_config, first_stage_config, cond_stage_config=None, spec=None, use_fp16=False,
                 cond_stage_trainable=False, **ignored):
        super().__init__()
        self.use_fp16 = bool(use_fp16)
        self.set_spec(spec or DiffusionSpec())
        self.model = DiffusionWrapper(instantiate_from_config(unet_config))
        self.first_stage_model = instantiate_from_config(first_stage_config)
        self.set_attention(getattr(self.diffusion_model, "attention_settings", None) or AttentionSettings())
        self.first_stage_model.set_train(False)
        for param in self.first_stage_model.get_parameters():
            param.requires_grad = False
        self.cond_stage_model = None
        if cond_stage_config is not None:
            self.cond_stage_model = instantiate_from_config(cond_stage_config)
            if not cond_stage_trainable:
                for param in self.cond_stage_model.get_parameters():
                    param.requires_grad = False

    def set_attention(self, settings, device=None):
        """The attention switch (an AttentionSettings) for the UNet and the VAE: the UNet config's keys
        at construction; the CLIs apply --attention here before any graph is compiled."""
        apply_settings(self, settings, device)

    def set_spec(self, spec):
        """Adopt a DiffusionSpec (training sets the one it trains with; samplers read it back)."""
        self._spec = spec
        self.scale_factor = spec.scale_factor     # a plain float, so compiled graphs fold it

    @property
    def spec(self):
        return self._spec

    @property
    def prediction_type(self):
        return self._spec.prediction_type

    @property
    def schedule(self):
        return self._spec.schedule

    @property
    def diffusion_model(self):
        return self.model.diffusion_model

    # text -> context
    def tokenize(self, prompts):
        """list[str] -> np.ndarray int32 (N, 77) with the text encoder's tokenizer."""
        return self._text_encoder().tokenize(list(prompts))

    def get_learned_conditioning(self, tokens):
        """Token ids (N, 77) int32 -> context (N, 77, context_dim)."""
        return self._text_encoder()(tokens)

    def _text_encoder(self):
        if self.cond_stage_model is None:
            raise UserError("this model was built without a text encoder (no cond_stage_config in the config)")
        return self.cond_stage_model

    # denoiser
    def apply_model(self, x_t, t, context):
        """UNet output (eps or v, see ``prediction_type``) for latents x_t (N,4,h,w) at timesteps t (N,)."""
        return self.model(x_t, t, context)

    def construct(self, x_t, t, context):
        return self.apply_model(x_t, t, context)

    # images <-> latents
    def encode_first_stage(self, x):
        """Images in [-1, 1] (N,3,H,W) -> posterior (mean, logvar) (N,4,H/8,W/8), unscaled."""
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, mean, logvar, noise=None):
        """Diffusion latents: scale_factor * (posterior sample with ``noise``, or the mean when noise is None)."""
        z = mean if noise is None else self.first_stage_model.sample(mean, logvar, noise)
        return z * self.scale_factor

    def decode_first_stage(self, z):
        """Diffusion latents -> images in about [-1, 1] (divides by scale_factor first)."""
        return self.first_stage_model.decode(z / self.scale_factor)


def build_model(config, lazy_init=False, **spec_overrides):
    """The model of a YAML path or dict (whole config or its ``model`` section), with its DiffusionSpec.

    ``spec_overrides``: DiffusionSpec fields that win over the YAML (None = not given), applied by
    :func:`ldm.diffusion.spec.resolve_spec`. ``lazy_init``: create parameters without allocating
    their data (under MindSpore's ``no_init_parameters``); use it when a checkpoint will be loaded
    right after, or to list shapes.
    """
    section = model_section(config)
    target = section.get("target", "ldm.models.latent_diffusion.LatentDiffusion")
    params = {k: v for k, v in (section.get("params") or {}).items()
              if k not in YAML_KEYS and k not in ("parameterization", "prediction_type")}
    if str(target).endswith("LatentDiffusion"):
        for key in ("unet_config", "first_stage_config"):
            if key not in params:
                raise UserError(f"model config lacks model.params.{key}")
    params["spec"] = resolve_spec(section, **spec_overrides)
    if lazy_init:
        with no_init_parameters():
            return instantiate_from_config({"target": target, "params": params})
    return instantiate_from_config({"target": target, "params": params})
