"""The work behind scripts/convert_weights.py: read, rename, check by loading, write atomically."""
import os

import numpy as np

from ldm.convert import checkpoint
from ldm.convert.diffusers import diffusers_model_config, is_diffusers_folder
from ldm.convert.readers import write_safetensors
from ldm.diffusion.spec import check_recorded_spec, recorded_spec, resolve_spec, spec_record
from ldm.errors import UserError
from ldm.util import write_yaml

CONFIG_HINTS = {"v1": "configs/v1-inference.yaml",
                "v2": "configs/v2-inference.yaml (512, eps) or configs/v2-vpred-inference.yaml (768-v)"}


def _source_config(source, config, state):
    if config is not None:
        from ldm.util import load_config
        return load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if is_diffusers_folder(source):
        return diffusers_model_config(source)
    hint = CONFIG_HINTS.get(checkpoint.checkpoint_config_hint(state))
    raise UserError(f"{source} is a single file: pass --config with the model YAML"
                    + (f" (probably {hint})" if hint else ""))


def _checked_mindone_state(state, cfg, source="checkpoint"):
    """Rename to MindONE names and load into the (lazily built) model; returns name -> float array in
    the model's parameter order. Raises CheckpointError listing what does not fit."""
    from ldm.models.latent_diffusion import build_model
    converted, unexpected = checkpoint.convert_to_mindone(state, cfg)
    model = build_model(cfg, lazy_init=True)
    checkpoint.load_params_into(model, converted, strict=True, unexpected=unexpected, assign=False, source=source)
    out = {}
    for param in model.get_parameters():
        value = np.asarray(converted[param.name])
        out[param.name] = value.reshape(tuple(param.shape))
    return out


def save_mindspore_checkpoint(state, path, dtype="fp32", append_dict=None):
    """Write ``name -> array`` as a MindSpore .ckpt atomically (float arrays as float32, or float16
    with ``dtype="fp16"``: half the file; loading casts back to each parameter's dtype).
    ``append_dict``: extra entries (the recorded diffusion spec)."""
    import mindspore as ms
    from ldm.io.ms_checkpoint import atomic_save
    float_type = {"fp32": np.float32, "fp16": np.float16}[dtype]
    items = [{"name": k, "data": ms.Tensor(v.astype(float_type) if np.issubdtype(v.dtype, np.floating) else v)}
             for k, v in state.items()]
    atomic_save(items, path, append_dict=append_dict)


def convert_weights(source, target, config=None, config_out=None, to="mindspore", dtype="fp32"):
    """Convert ``source`` (file or diffusers folder) to ``target``; returns a one-line summary.

    to="mindspore": our .ckpt (MindONE names). to="diffusers": if ``target`` ends in .safetensors, one
    file with diffusers names under ``unet.``/``vae.``/``text_encoder.`` (readable back by
    read_state_dict / load_model); otherwise a new diffusers folder (configs, tokenizer, scheduler).
    """
    if not os.path.exists(source):
        raise UserError(f"source not found: {source}")
    if to not in ("mindspore", "diffusers"):
        raise UserError(f"--to must be mindspore or diffusers, got {to!r}")
    if dtype not in ("fp32", "fp16") or (dtype != "fp32" and to != "mindspore"):
        raise UserError(f"--dtype must be fp32, or fp16 with --to mindspore; got {dtype!r}")
    if os.path.isdir(source) and not is_diffusers_folder(source):
        raise UserError(f"{source} is a folder but not a diffusers one (needs unet/, vae/, text_encoder/)")
    state = checkpoint.read_state_dict(source)
    cfg = _source_config(source, config, state)
    recorded = recorded_spec(state)          # a checkpoint of our training keeps its spec
    if recorded is not None:
        check_recorded_spec(resolve_spec(cfg), recorded, config or "the config", source)
    layout = checkpoint.detect_layout(state)
    ours = _checked_mindone_state(state, cfg, source)
    if to == "mindspore":
        save_mindspore_checkpoint(ours, target, dtype, append_dict=spec_record(recorded) if recorded else None)
    else:
        exported = checkpoint.convert_mindone_to_diffusers(ours, cfg)
        if target.endswith(".safetensors"):
            write_safetensors(exported, target, metadata={"format": "pt", "layout": "diffusers-single-file"})
        else:
            from ldm.convert.diffusers_export import write_diffusers_folder
            write_diffusers_folder(exported, cfg, target)
    if config_out:
        write_yaml(cfg, config_out)
    return (f"converted {source} ({layout} layout, {len(ours)} parameters) -> {target} ({to})"
            + (f"; config -> {config_out}" if config_out else ""))


__all__ = ["convert_weights", "save_mindspore_checkpoint"]
