"""Name maps for the CLIP text tower: MindONE <-> transformers CLIPTextModel <-> OpenCLIP.

Names here are relative to the tower (no checkpoint prefix):
* MindONE (ours): under ``cond_stage_model.transformer.``;
* transformers ``CLIPTextModel`` names (``embeddings.token_embedding.weight``, ...): SD 1.x Stability
  checkpoints hold them under ``cond_stage_model.transformer.text_model.``; diffusers'
  ``text_encoder/`` files with or without ``text_model.`` (transformers >= 5 drops it);
* OpenCLIP names (``token_embedding.weight``, ``transformer.resblocks.N.attn.in_proj_weight``, ...):
  SD 2.x Stability checkpoints under ``cond_stage_model.model.``.

A table row is ``(mindone_name, source)``; ``source`` is a name, or a (q, k, v) tuple of names whose
arrays are concatenated on axis 0 into MindONE's fused ``in_proj`` (and split back on export).
"""
import numpy as np

from ldm.errors import CheckpointError

HF, OPEN_CLIP = "transformers", "open_clip"
# weights in the source files that the conditioning never uses
IGNORED_SUFFIXES = ("position_ids", "text_projection", "logit_scale", "attn_mask")

_BLOCK_HF = [
    ("ln_1.gamma", "layer_norm1.weight"), ("ln_1.beta", "layer_norm1.bias"),
    ("attn.attn.in_proj.weight", tuple(f"self_attn.{p}_proj.weight" for p in "qkv")),
    ("attn.attn.in_proj.bias", tuple(f"self_attn.{p}_proj.bias" for p in "qkv")),
    ("attn.attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_2.gamma", "layer_norm2.weight"), ("ln_2.beta", "layer_norm2.bias"),
    ("c_fc.weight", "mlp.fc1.weight"), ("c_fc.bias", "mlp.fc1.bias"),
    ("c_proj.weight", "mlp.fc2.weight"), ("c_proj.bias", "mlp.fc2.bias"),
]
_BLOCK_OPEN_CLIP = [
    ("ln_1.gamma", "ln_1.weight"), ("ln_1.beta", "ln_1.bias"),
    ("attn.attn.in_proj.weight", "attn.in_proj_weight"), ("attn.attn.in_proj.bias", "attn.in_proj_bias"),
    ("attn.attn.out_proj.weight", "attn.out_proj.weight"), ("attn.attn.out_proj.bias", "attn.out_proj.bias"),
    ("ln_2.gamma", "ln_2.weight"), ("ln_2.beta", "ln_2.bias"),
    ("c_fc.weight", "mlp.c_fc.weight"), ("c_fc.bias", "mlp.c_fc.bias"),
    ("c_proj.weight", "mlp.c_proj.weight"), ("c_proj.bias", "mlp.c_proj.bias"),
]


def text_name_table(layers, flavor):
    """Rows ``(mindone_name, source_name_or_qkv_tuple)`` for a tower of ``layers`` blocks."""
    if flavor == HF:
        rows = [("embedding_table", "embeddings.token_embedding.weight"),
                ("positional_embedding", "embeddings.position_embedding.weight")]
        block, block_prefix = _BLOCK_HF, "encoder.layers.{}."
        rows_end = [("ln_final.gamma", "final_layer_norm.weight"), ("ln_final.beta", "final_layer_norm.bias")]
    elif flavor == OPEN_CLIP:
        rows = [("embedding_table", "token_embedding.weight"), ("positional_embedding", "positional_embedding")]
        block, block_prefix = _BLOCK_OPEN_CLIP, "transformer.resblocks.{}."
        rows_end = [("ln_final.gamma", "ln_final.weight"), ("ln_final.beta", "ln_final.bias")]
    else:
        raise ValueError(f"unknown text tower flavor {flavor!r}")
    for i in range(layers):
        ours = f"transformer_layer.resblocks.{i}."
        theirs = block_prefix.format(i)
        for m, s in block:
            rows.append((ours + m, tuple(theirs + n for n in s) if isinstance(s, tuple) else theirs + s))
    return rows + rows_end


def detect_text_flavor(names):
    """transformers or open_clip naming, from the (prefix-free) names of a text tower."""
    names = list(names)
    if any(n.startswith(("encoder.layers.", "embeddings.")) for n in names):
        return HF
    if any(n.startswith(("transformer.resblocks.", "token_embedding.")) for n in names):
        return OPEN_CLIP
    raise CheckpointError("text encoder weights are neither transformers CLIPTextModel nor OpenCLIP names")


def strip_text_model(state):
    """Drop the optional ``text_model.`` level of transformers < 5 files."""
    return {(k[len("text_model."):] if k.startswith("text_model.") else k): v for k, v in state.items()}


def count_layers(names, flavor):
    key = "encoder.layers." if flavor == HF else "transformer.resblocks."
    found = {int(n[len(key):].split(".", 1)[0]) for n in names if n.startswith(key)}
    return max(found) + 1 if found else 0


def text_to_mindone(state, layers):
    """Tower weights (transformers or OpenCLIP names, no prefix) -> (MindONE dict, used source names).

    Only the first ``layers`` blocks are taken: SD 2.x keeps 23 of OpenCLIP's 24. Names absent from
    ``state`` are simply not produced; the loader reports them as missing.
    """
    state = strip_text_model(state)
    flavor = detect_text_flavor(state)
    out, used = {}, set()
    for ours, src in text_name_table(layers, flavor):
        parts = src if isinstance(src, tuple) else (src,)
        if all(p in state for p in parts):
            out[ours] = np.concatenate([state[p] for p in parts], 0) if len(parts) > 1 else state[src]
            used.update(parts)
    return out, used


def text_from_mindone(state, layers, flavor=HF):
    """MindONE tower weights -> transformers (default) or OpenCLIP names; in_proj is split in 3."""
    out = {}
    for ours, src in text_name_table(layers, flavor):
        if ours not in state:
            raise CheckpointError(f"text encoder weight {ours} is missing")
        value = state[ours]
        if isinstance(src, tuple):
            for name, part in zip(src, np.split(value, 3, axis=0)):
                out[name] = part
        else:
            out[src] = value
    return out


def is_ignorable_text_name(name, layers, flavor):
    """Weights a Stability/diffusers text tower may carry that the conditioning does not use."""
    if name.endswith(IGNORED_SUFFIXES):
        return True
    key = "encoder.layers." if flavor == HF else "transformer.resblocks."
    if name.startswith(key):
        return int(name[len(key):].split(".", 1)[0]) >= layers
    return False
