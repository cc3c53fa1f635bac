"""LatentDiffusion: the UNet, the VAE and the text encoder plus the noise schedule, built from a model YAML.

Only the networks and the latent <-> image / text -> context plumbing live here; noise schedules and the
eps/v algebra are in :mod:`ldm.diffusion`, training in :mod:`ldm.train`. Parameter names get MindONE's
prefixes ``model.diffusion_model.``, ``first_stage_model.``, ``cond_stage_model.``.
"""
import os

from mindspore import nn
from mindspore.nn.utils import no_init_parameters

from ldm.diffusion.schedule import NoiseSchedule
from ldm.errors import UserError
from ldm.util import instantiate_from_config, load_config

PREDICTION_TYPES = {"v": "v", "velocity": "v", "v_prediction": "v", "eps": "eps", "epsilon": "eps"}


def normalize_prediction_type(value):
    """'v' | 'velocity' | 'v_prediction' -> 'v'; 'eps' | 'epsilon' -> 'eps'."""
    key = str(value).strip().lower()
    if key not in PREDICTION_TYPES:
        raise UserError(f"unknown prediction type {value!r}: use \"v\" or \"eps\"")
    return PREDICTION_TYPES[key]


class DiffusionWrapper(nn.Cell):
    """Holds the UNet as ``diffusion_model`` (so names read ``model.diffusion_model.*`` as in MindONE)."""

    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet

    def construct(self, x, t, context=None):
        return self.diffusion_model(x, t, context)


class LatentDiffusion(nn.Cell):
    """Stable Diffusion model container. ``construct(x_t, t, context)`` = :meth:`apply_model`.

    Schedule arrays (float64 numpy, length ``num_timesteps``): ``betas``, ``alphas_cumprod``; the full
    :class:`ldm.diffusion.schedule.NoiseSchedule` is ``schedule``. The VAE is always frozen; the text encoder
    too unless ``cond_stage_trainable``. Other LDM/MindONE keys (first_stage_key, monitor, ...) are ignored.
    """

    def __init__(self, unet_config, first_stage_config, cond_stage_config=None, prediction_type="eps",
                 linear_start=0.00085, linear_end=0.012, timesteps=1000, beta_schedule="scaled_linear",
                 rescale_zero_snr=False, scale_factor=0.18215, use_fp16=False, cond_stage_trainable=False,
                 parameterization=None, **ignored):
        super().__init__()
        if parameterization is not None:
            prediction_type = parameterization
        self.prediction_type = normalize_prediction_type(prediction_type)
        self.scale_factor = float(scale_factor)
        self.use_fp16 = bool(use_fp16)
        self.model = DiffusionWrapper(instantiate_from_config(unet_config))
        self.first_stage_model = instantiate_from_config(first_stage_config)
        self.first_stage_model.set_train(False)
        for param in self.first_stage_model.get_parameters():
            param.requires_grad = False
        self.cond_stage_model = None
        if cond_stage_config is not None:
            self.cond_stage_model = instantiate_from_config(cond_stage_config)
            if not cond_stage_trainable:
                for param in self.cond_stage_model.get_parameters():
                    param.requires_grad = False
        self.schedule = NoiseSchedule.from_model_params(
            dict(linear_start=linear_start, linear_end=linear_end, timesteps=timesteps, beta_schedule=beta_schedule),
            rescale_zero_snr=rescale_zero_snr)
        self.num_timesteps = self.schedule.num_train_timesteps
        self.betas = self.schedule.betas
        self.alphas_cumprod = self.schedule.alphas_cumprod

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


def model_section(config):
    """The ``{target, params, prediction_type}`` model mapping from a config path, a full config or the section."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(os.fspath(config))
    if not isinstance(config, dict):
        raise UserError(f"model config must be a mapping or a YAML path, got {type(config).__name__}")
    section = config.get("model", config)
    if not isinstance(section, dict) or "params" not in section:
        raise UserError("model config has no model.params section (see configs/v2-vpred-inference.yaml)")
    return section


def build_model(config, lazy_init=False):
    """LatentDiffusion from a YAML path or dict (whole config or its ``model`` section).

    ``lazy_init``: create parameters without allocating their data (under MindSpore's
    ``no_init_parameters``); use it when a checkpoint will be loaded right after, or to list shapes.
    """
    section = model_section(config)
    params = dict(section["params"])
    for key in ("unet_config", "first_stage_config"):
        if key not in params:
            raise UserError(f"model config lacks model.params.{key}")
    if "prediction_type" in section:
        params["prediction_type"] = section["prediction_type"]
    if "parameterization" in params:
        params["prediction_type"] = params.pop("parameterization")
    target = section.get("target", "ldm.models.latent_diffusion.LatentDiffusion")
    if lazy_init:
        with no_init_parameters():
            return instantiate_from_config({"target": target, "params": params})
    return instantiate_from_config({"target": target, "params": params})
