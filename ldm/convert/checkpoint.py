"""Checkpoints in, MindSpore model out: read any format, convert names to MindONE's, load strictly.

Layouts (what the names look like, whatever the file format):
* ``mindone``: our names (``model.diffusion_model.*``, ``first_stage_model.*`` with gamma/beta,
  ``cond_stage_model.transformer.embedding_table``...); loads unchanged;
* ``stability``: CompVis/Stability LDM names (``model.diffusion_model.*``, ``first_stage_model.*``
  with weight/bias, text tower under ``cond_stage_model.transformer.text_model.`` (SD 1.x) or
  ``cond_stage_model.model.`` (SD 2.x, OpenCLIP, 24 layers of which the config keeps ``layers``));
* ``diffusers``: ``unet.*``, ``vae.*``, ``text_encoder.*`` (a diffusers folder read by
  :mod:`ldm.convert.diffusers`, or our single-file diffusers export).

Public API: :func:`read_state_dict`, :func:`detect_layout`, :func:`convert_to_mindone`,
:func:`convert_mindone_to_diffusers`, :func:`load_params_into`, :func:`load_model`.
"""
import os

import numpy as np

from ldm.convert import names_text
from ldm.convert.readers import read_weight_file
from ldm.errors import CheckpointError
from ldm.io.tensor_checks import check_weight
from ldm.util import part_params

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
SD1_TEXT = "cond_stage_model.transformer.text_model."
SD2_TEXT = "cond_stage_model.model."
DIFFUSERS_PREFIXES = {"unet": "unet.", "vae": "vae.", "text": "text_encoder."}
MODEL_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
# Stability training leftovers that never map to a parameter (schedule buffers, EMA copies, VAE loss)
STABILITY_IGNORED_PREFIXES = ("model_ema.", "first_stage_model.loss.", "model.diffusion_model.model_ema",
                              "lvlb_weights", "betas", "alphas", "sqrt_", "log_one_minus", "posterior_",
                              "logvar", "cond_stage_model.model.visual.")


# ------------------------------------------------------------------ reading
def read_state_dict(path):
    """Flat ``name -> np.ndarray`` from a MindSpore .ckpt, torch .ckpt/.pt/.pth/.bin, .safetensors or a
    diffusers folder (then names get ``unet.``/``vae.``/``text_encoder.`` prefixes)."""
    if os.path.isdir(path):
        from ldm.convert.diffusers import read_diffusers_weights
        return read_diffusers_weights(path)
    return read_weight_file(path)


def detect_layout(state):
    """'mindone' | 'stability' | 'diffusers' from the names in a flat state dict."""
    names = list(state)
    if any(n.startswith(tuple(DIFFUSERS_PREFIXES.values())) for n in names):
        return "diffusers"
    if any(n.startswith((SD1_TEXT, SD2_TEXT)) for n in names):
        return "stability"
    mindone_text = (TEXT + "embedding_table", TEXT + "transformer_layer.")
    if any(n.startswith(mindone_text) or (n.startswith(MODEL_PREFIXES) and n.endswith((".gamma", ".beta")))
           for n in names):
        return "mindone"
    if any(n.startswith(MODEL_PREFIXES) for n in names):
        return "stability"
    raise CheckpointError("checkpoint names match no known Stable Diffusion layout "
                          f"(first names: {', '.join(names[:3])})")


# ------------------------------------------------------------------ name conversion
def _unet_rows(config):
    from ldm.convert.names_unet import unet_name_table
    return unet_name_table(part_params(config, "unet_config"))


def _vae_rows(config):
    from ldm.convert.names_vae import vae_name_table
    return vae_name_table(part_params(config, "first_stage_config").get("ddconfig", {}))


def _text_layers(config):
    return int(part_params(config, "cond_stage_config").get("layers", 12))


def _take(state, rows, ours_prefix, src_prefix, src_column, out, used):
    """Copy rows ``(mindone, stability, diffusers)`` whose source exists into ``out``."""
    for row in rows:
        src = src_prefix + row[src_column]
        if src in state:
            out[ours_prefix + row[0]] = state[src]
            used.add(src)


def _text_source(state, layout):
    """(prefix, prefix-free text weights) of the text tower in a Stability/diffusers dict."""
    if layout == "diffusers":
        prefixes = (DIFFUSERS_PREFIXES["text"],)
    else:
        prefixes = (SD2_TEXT, "cond_stage_model.transformer.")
    for prefix in prefixes:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            return prefix, part
    return None, {}


def convert_to_mindone(state, config, layout=None):
    """Rename a Stability or diffusers state dict to MindONE names for the model ``config`` describes.

    Returns ``(converted, unexpected)``: ``unexpected`` lists source names under a model prefix that
    nothing consumed (known training leftovers excluded). Missing names are left for the loader.
    """
    layout = layout or detect_layout(state)
    if layout == "mindone":
        return dict(state), []
    if layout not in ("stability", "diffusers"):
        raise CheckpointError(f"unknown checkpoint layout {layout!r}")
    column = 1 if layout == "stability" else 2
    unet_src = UNET if layout == "stability" else DIFFUSERS_PREFIXES["unet"]
    vae_src = VAE if layout == "stability" else DIFFUSERS_PREFIXES["vae"]
    out, used = {}, set()
    _take(state, _unet_rows(config), UNET, unet_src, column, out, used)
    _take(state, _vae_rows(config), VAE, vae_src, column, out, used)

    layers = _text_layers(config)
    prefix, text_state = _text_source(state, layout)
    if text_state:
        text_state = names_text.strip_text_model(text_state)
        converted, text_used = names_text.text_to_mindone(text_state, layers)
        out.update({TEXT + k: v for k, v in converted.items()})
        flavor = names_text.detect_text_flavor(text_state)
        for key in state:
            if key.startswith(prefix):
                rel = next(iter(names_text.strip_text_model({key[len(prefix):]: None})))
                if rel in text_used or names_text.is_ignorable_text_name(rel, layers, flavor):
                    used.add(key)

    model_prefixes = MODEL_PREFIXES if layout == "stability" else tuple(DIFFUSERS_PREFIXES.values())
    unexpected = sorted(k for k in state if k.startswith(model_prefixes) and k not in used
                        and not k.startswith(STABILITY_IGNORED_PREFIXES))
    return out, unexpected


def convert_mindone_to_diffusers(state, config):
    """MindONE names -> single-file diffusers layout (``unet.``/``vae.``/``text_encoder.`` prefixes;
    text names as transformers CLIPTextModel with ``text_model.``, q/k/v split)."""
    out = {}
    for prefix, rows, target in ((UNET, _unet_rows(config), DIFFUSERS_PREFIXES["unet"]),
                                 (VAE, _vae_rows(config), DIFFUSERS_PREFIXES["vae"])):
        for row in rows:
            name = prefix + row[0]
            if name not in state:
                raise CheckpointError(f"cannot export: {name} is missing from the checkpoint")
            value = state[name]
            if prefix == VAE and ".attentions." in row[2] and value.ndim == 4:
                value = value[:, :, 0, 0]  # diffusers stores the VAE mid-block attention as Linear
            out[target + row[2]] = value
    text = {k[len(TEXT):]: v for k, v in state.items() if k.startswith(TEXT)}
    for name, value in names_text.text_from_mindone(text, _text_layers(config)).items():
        out[DIFFUSERS_PREFIXES["text"] + "text_model." + name] = value
    return out


# ------------------------------------------------------------------ loading
def _squeezed(shape):
    return tuple(d for d in shape if d != 1)


def _summary(kind, names, limit=8):
    names = sorted(names)
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{len(names)} {kind}: {', '.join(names[:limit])}{more}"


def load_params_into(cell, state_dict, strict=True, prefix="", unexpected=(), assign=True, source="checkpoint"):
    """Copy arrays into ``cell``'s parameters (looked up as ``prefix + param.name``).

    Values are cast to each parameter's dtype; shapes must match up to size-1 axes (1x1 conv vs
    linear). With ``strict`` every parameter must be present and every ``prefix``-ed array used;
    otherwise one CheckpointError lists missing / unexpected / shape-mismatched names.
    ``assign=False`` only checks (no copies: used to validate a conversion of a large model).
    Every value for a floating parameter must be floating and finite (``source`` names the file).
    Returns the list of names that were not loaded (empty when strict).
    """
    import mindspore as ms

    params = {prefix + p.name: p for p in cell.get_parameters()}
    missing, mismatched, values = [], [], {}
    for name, param in params.items():
        if name not in state_dict:
            missing.append(name)
            continue
        value = np.asarray(state_dict[name])
        want = tuple(param.shape)
        if tuple(value.shape) != want:
            if _squeezed(value.shape) != _squeezed(want):
                mismatched.append(f"{name} (checkpoint {tuple(value.shape)} vs model {want})")
                continue
            value = value.reshape(want)
        if str(param.dtype).lower().startswith(("float", "bfloat")):
            check_weight(name, value, source)       # a NaN or integer weight would load silently
        values[name] = value
    extra = list(unexpected) + [k for k in state_dict if k.startswith(prefix) and k not in params
                                and (prefix or k.startswith(MODEL_PREFIXES))]
    if strict and (missing or mismatched or extra):
        parts = [_summary(kind, names) for kind, names in
                 (("missing", missing), ("unexpected", extra), ("shape-mismatched", mismatched)) if names]
        hint = " (does the config match the checkpoint, e.g. SD 1.x weights with an SD 2.x config?)" \
            if mismatched or (missing and extra) else ""
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts) + hint)
    if assign:
        for name, value in values.items():
            params[name].set_data(ms.Tensor(value, dtype=params[name].dtype))
    return sorted(missing + [m.split(" ", 1)[0] for m in mismatched])


def load_model(config, ckpt_path=None, strict=True, adopt_recorded_spec=False, check_spec=True, **spec_overrides):
    """Build the LatentDiffusion model of ``config`` (dict or YAML path) and load ``ckpt_path``.

    Any layout/format is accepted (see module doc). ``ckpt_path=None`` keeps random weights.
    A checkpoint written by our training records its DiffusionSpec: by default the config must agree
    with it (prediction type, zero SNR, beta schedule), else one UserError; ``adopt_recorded_spec``
    (used when the user gave no config) takes the recorded spec instead of the YAML's; ``check_spec=False``
    (training's starting weights: an eps base fine-tuned to v is the point of a v fine-tune) does neither.
    ``spec_overrides`` (DiffusionSpec fields, None = not given) win over both.
    Raises CheckpointError (one message) if the weights do not fit.
    """
    from ldm.diffusion.spec import check_recorded_spec, recorded_spec, resolve_spec
    from ldm.models.latent_diffusion import build_model
    from ldm.util import load_config

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    if ckpt_path is None:
        return build_model(cfg, **spec_overrides)
    if not os.path.exists(ckpt_path):
        raise CheckpointError(f"checkpoint not found: {ckpt_path}")
    from ldm.convert.names_controlnet import without_controlnet
    state = without_controlnet(read_state_dict(ckpt_path))   # a base + ControlNet file: the base part
    recorded = recorded_spec(state)
    if recorded is not None and check_spec:
        if adopt_recorded_spec:
            spec_overrides = dict(recorded.to_dict(), **{k: v for k, v in spec_overrides.items() if v is not None})
        else:
            name = config if isinstance(config, (str, os.PathLike)) else "the model config"
            check_recorded_spec(resolve_spec(cfg), recorded, name, ckpt_path)
    state, unexpected = convert_to_mindone(state, cfg)
    # strict loading sets every parameter, so skip the (slow, large) random initialisation
    model = build_model(cfg, lazy_init=strict, **spec_overrides)
    load_params_into(model, state, strict=strict, unexpected=unexpected, source=ckpt_path)
    model.set_train(False)
    return model


def checkpoint_config_hint(state):
    """'v1' or 'v2' family guessed from the text tower (for error messages and default configs)."""
    if any(k.startswith(SD2_TEXT) for k in state):
        return "v2"
    emb = state.get(TEXT + "embedding_table")
    if emb is not None:
        return "v2" if emb.shape[-1] == 1024 else "v1"
    return "v1" if any(k.startswith(SD1_TEXT) for k in state) else None


__all__ = ["read_state_dict", "detect_layout", "convert_to_mindone", "convert_mindone_to_diffusers",
           "load_params_into", "load_model", "CheckpointError"]
