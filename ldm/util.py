"""Config helpers: load a YAML and build objects from ``{target, params}`` dicts (as LDM does)."""
import importlib
import os

import yaml

from ldm.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_yaml(path):
    """Parse a YAML file strictly (duplicate keys, bad syntax, non-UTF-8 bytes: one UserError line)."""
    from ldm.io.text import read_utf8
    text = read_utf8(path, "config file")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc


def load_config(path):
    """Read a YAML config file into nested dicts; a missing or malformed file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    cfg = safe_load_yaml(path)
    if not isinstance(cfg, dict):
        raise UserError(f"config file {path} does not hold a mapping")
    return cfg


def write_yaml(config, path):
    """Write a config as YAML atomically (temp file, then rename). Returns ``path``."""
    from ldm.io.atomic import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)
    return path


def model_section(config):
    """The ``model`` mapping ({target, params, prediction_type}) of a model config given as a YAML path,
    the whole config, or the section itself: the one accessor every part of the library uses."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(os.fspath(config))
    if not isinstance(config, dict):
        raise UserError(f"model config must be a mapping or a YAML path, got {type(config).__name__}")
    section = config.get("model", config)
    if not isinstance(section, dict):
        raise UserError("the model config's 'model' entry is not a mapping")
    return section


def model_params(config):
    """``model.params`` of a model config ({} when absent)."""
    return model_section(config).get("params") or {}


def part_params(config, key):
    """``model.params.<key>.params`` (key: unet_config, first_stage_config, cond_stage_config)."""
    return (model_params(config).get(key) or {}).get("params") or {}


# MindONE's (and CompVis') target strings -> ours, so their model YAMLs build our classes unchanged
TARGET_ALIASES = {
    "ldm.models.diffusion.ddpm.LatentDiffusion": "ldm.models.latent_diffusion.LatentDiffusion",
    # inpainting (MindONE's and Stability's v2-inpaint configs): the same container, the UNet's 9 input channels
    # say what it is (ldm.pipeline_inpaint)
    "ldm.models.diffusion.ddpm.LatentInpaintDiffusion": "ldm.models.latent_diffusion.LatentDiffusion",
    "ldm.modules.diffusionmodules.openaimodel.UNetModel": "ldm.models.unet.UNetModel",
    "ldm.modules.encoders.modules.FrozenCLIPEmbedder": "ldm.models.text_encoder.FrozenCLIPEmbedder",
    "ldm.models.autoencoder.AutoencoderKL": "ldm.models.autoencoder.AutoencoderKL",
    # MindONE's ControlNet configs (cldm): the base model is ours; its ControlNet is read from
    # control_stage_config by ldm.convert.controlnet (the UNet ignores the control keys it is given)
    "cldm.cldm.ControlLDM": "ldm.models.latent_diffusion.LatentDiffusion",
    "cldm.cldm.ControlledUnetModel": "ldm.models.unet.UNetModel",
    "cldm.cldm.ControlnetUnetModel": "ldm.models.unet.UNetModel",
    "cldm.cldm.ControlNet": "ldm.models.controlnet.ControlNetModel",
}


def get_obj_from_str(name):
    """Import ``package.module.Attr`` and return ``Attr`` (MindONE target names are aliased)."""
    name = TARGET_ALIASES.get(name, name)
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"config target {name!r} cannot be imported: {exc}") from exc


def instantiate_from_config(config, **extra):
    """Build ``target(**params, **extra)`` from a ``{target, params}`` mapping."""
    if not isinstance(config, dict) or "target" not in config:
        raise UserError(f"expected a mapping with a 'target' key, got {config!r}"[:200])
    cls = get_obj_from_str(config["target"])
    params = config.get("params", {}) or {}
    if not isinstance(params, dict):
        raise UserError(f"'params' of config target {config['target']!r} must be a mapping")
    try:
        return cls(**params, **extra)
    except TypeError as exc:
        # a config key the class does not take (e.g. CompVis' `version`): name it in one line;
        # other TypeErrors come from inside the constructor and are real bugs, so they propagate
        if "unexpected keyword argument" in str(exc):
            raise UserError(f"config target {config['target']!r}: {exc}") from exc
        raise
