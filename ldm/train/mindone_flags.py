"""What MindONE's train_text_to_image.py flags do here, beyond plain recipe values.

Read from MindONE's ``examples/stable_diffusion_v2/train_text_to_image.py`` (2026-12-01):
* ``profile``: ``mindspore.Profiler`` is started before training, ``epochs`` is forced to 3 and the
  profile is analysed after the last step (the run then ends normally); here into output_path/profiler.
* ``custom_text_encoder``: meant to take the text encoder from another checkpoint (MindONE's helper
  re-reads the pretrained file by mistake, so there it has no effect); here its ``cond_stage_model.*``
  weights replace the text encoder's.
* ``unet_initialize_random``: the pretrained weights are loaded without ``model.diffusion_model.*``.
* ``lora_fp16``: MindONE builds each LoRA layer (base Dense and adapters) with ``.to_float(fp16)``:
  fp16 compute, fp32 parameters. Here each LoRA layer computes in fp16 the same way, on every device,
  and hands its result back in the dtype it was given (MindONE's UNet around it is fp16 anyway).
* ``enable_flash_attention`` overrides the UNet config's key: Ascend's flash-attention kernel, and where
  there is none one notice line and chunked attention (:mod:`ldm.models.attention_ops`).
  ``enable_modelarts`` / ``json_data_path`` / ``num_workers`` drive ModelArts' data sync there; ModelArts
  does not exist here: one notice line.
"""
import contextlib
import logging
import os

import mindspore as ms

from ldm.errors import CheckpointError
from ldm.util import model_params

_log = logging.getLogger("ldm.train")
UNET_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "cond_stage_model."
PROFILE_EPOCHS = 3  # MindONE: ``if args.profile: args.epochs = 3``


def notices(cfg, on_cpu):
    """One line per MindONE flag that is accepted but cannot act here (empty when none applies)."""
    lines = []
    if cfg.enable_modelarts:
        lines.append("enable_modelarts: ModelArts is not supported here; json_data_path and num_workers are "
                     "ignored and the data is read from data_path")
    line = flash_notice(cfg, "CPU" if on_cpu else None)
    if line:
        lines.append(line)
    return lines


def flash_notice(cfg, device=None):
    """The one line for flash attention asked for (``attention: flash`` or MindONE's
    ``enable_flash_attention``, in the recipe or the model config) where no kernel exists; None otherwise."""
    from ldm.models.attention_ops import describe, flash_available, settings_from_config
    from ldm.util import load_config
    settings = settings_from_config(load_config(cfg.model_config), cfg.attention or None, cfg.attention_chunk,
                                    cfg.enable_flash_attention)
    if settings.mode != "flash" or flash_available(device):
        return None
    label = "attention flash" if (cfg.attention or "") == "flash" else "enable_flash_attention"
    return describe(settings, device, label)


def write_args_yaml(cfg):
    """``output_path/args.yaml``: every setting of the run, as MindONE dumps its ``vars(args)``; written
    atomically, so a run stopped while writing leaves the previous run's file whole."""
    import yaml
    from ldm.io.atomic import atomic_path
    path = os.path.join(cfg.output_path, "args.yaml")
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(vars(cfg), f, default_flow_style=False, sort_keys=False)
    return path


def apply_attention_keys(config, cfg):
    """The recipe's attention keys written into ``unet_config.params`` (MindONE writes a set
    ``enable_flash_attention`` there; ours ``attention``, ``attention_chunk``); unset ones leave the YAML's."""
    unet = model_params(config).get("unet_config")
    if not isinstance(unet, dict):
        return config
    params = unet.setdefault("params", {})
    if cfg.enable_flash_attention is not None:
        params["enable_flash_attention"] = bool(cfg.enable_flash_attention)
    if getattr(cfg, "attention", ""):
        params["attention"] = cfg.attention
    if getattr(cfg, "attention_chunk", None):
        params["attention_chunk"] = int(cfg.attention_chunk)
    return config


def _mindone_state(path, config):
    from ldm.convert.checkpoint import convert_to_mindone, read_state_dict
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    state, _ = convert_to_mindone(read_state_dict(path), config)
    return state


def load_without_unet(model, config, path):
    """Load every weight of ``path`` except the UNet's (unet_initialize_random); the rest must fit."""
    from ldm.convert.checkpoint import load_params_into
    state = {k: v for k, v in _mindone_state(path, config).items() if not k.startswith(UNET_PREFIX)}
    loaded = load_params_into(model, state, strict=False, source=path)
    missing = [n for n in loaded if not n.startswith(UNET_PREFIX)]
    if missing:
        raise CheckpointError(f"{path} does not fit the model outside the UNet: {len(missing)} missing, "
                              f"e.g. {missing[0]}")
    _log.warning("unet_initialize_random: loaded %s without its UNet weights; the UNet starts from random init", path)
    return model


def load_custom_text_encoder(model, config, path):
    """Replace the text encoder's weights with the ``cond_stage_model.*`` weights of ``path`` (strict)."""
    from ldm.convert.checkpoint import load_params_into
    text = {k: v for k, v in _mindone_state(path, config).items() if k.startswith(TEXT_PREFIX)}
    if not text:
        raise CheckpointError(f"custom_text_encoder {path} holds no {TEXT_PREFIX}* weights")
    load_params_into(model.cond_stage_model, text, strict=True, source=path)
    _log.info("custom_text_encoder: text encoder weights from %s (%d arrays)", path, len(text))
    return model


def set_lora_compute_dtype(model, dtype=ms.float16):
    """MindONE's ``lora_fp16``: every LoRA layer (base projection and adapters) computes in ``dtype``;
    the parameters, and so the optimiser's values, stay fp32. Returns the number of layers set. Linear
    layers only: MindONE has no conv LoRA, and conv LoRA (conv_dim) keeps the UNet's own compute dtype
    (amp_level), so adding it does not change how the ResBlock convs compute."""
    from ldm.models.lora import lora_layers
    layers = [cell for cell in lora_layers(model) if len(cell.weight.shape) == 2]
    for cell in layers:
        cell.lora_dtype = dtype
    return len(layers)


def replace_scaler(cfg, scaler):
    """``loss_scaler_type: static`` keeps ``init_loss_scale`` fixed (MindONE's FixedLossScaleUpdateCell)."""
    if scaler is None or cfg.loss_scaler_type != "static":
        return scaler
    _log.info("static loss scale %g", cfg.init_loss_scale)
    return ms.amp.StaticLossScaler(cfg.init_loss_scale)


@contextlib.contextmanager
def profiling(enabled, output_path):
    """``mindspore.Profiler`` over the steps run inside; analysed (files written) on the way out."""
    if not enabled:
        yield None
        return
    folder = os.path.join(output_path, "profiler")
    os.makedirs(folder, exist_ok=True)
    profiler = ms.Profiler(output_path=folder)
    try:
        yield profiler
    finally:
        profiler.analyse()
        _log.info("profile written to %s", folder)
