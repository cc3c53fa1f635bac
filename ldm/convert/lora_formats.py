"""LoRA files of other tools read into our MindONE names, and ours written as a diffusers or kohya-ss LoRA.

Layouts read (names only; the file format is sniffed by :mod:`ldm.convert.readers`):
* ``mindone``: ours (``model.diffusion_model.*.lora_down.weight`` ...), handled by ldm.models.lora;
* ``kohya``: kohya-ss sd-scripts / LyCORIS-LoCon, ``lora_unet_<diffusers or CompVis module path with '_'>``
  and ``lora_te_text_model_encoder_layers_N_*`` with ``.lora_down.weight``, ``.lora_up.weight`` and an
  optional ``.alpha`` (scale alpha / rank; no alpha = scale 1); conv LoRA has 4-D down/up;
* ``diffusers``: ``unet.<module>`` / ``text_encoder.[text_model.]<module>`` with peft's ``lora_A``/``lora_B``,
  or the older ``lora.down``/``lora.up``, ``lora_linear_layer.down``/``up`` and
  ``processor.to_q_lora.down`` names; ``base_model.model.`` (peft save_pretrained) and unprefixed UNet
  names too. Scale: ``<module>.alpha`` entries, else peft's lora_alpha / r (rank_pattern, alpha_pattern,
  use_rslora) from the file's ``lora_adapter_metadata`` (diffusers' save_lora_weights) or an
  ``adapter_config.json`` beside the file, else 1 (diffusers' convention without alphas).

Written (:func:`export_lora_file`): ``diffusers_lora`` (peft names, one rank, alpha folded; linear only) and
``kohya_lora`` (kohya-ss names, per-module rank and ``.alpha``, conv adapters as LoCon). Our DoRA
magnitudes (``<layer>.lora_magnitude_vector``) have no faithful counterpart in either: such files are refused.

Module names map through the converter's own tables (:func:`ldm.convert.names_unet.unet_name_table`,
:func:`ldm.convert.names_text.text_name_table`). transformers' separate q/k/v adapters become one
adapter on our fused ``in_proj``: a shared down when the three downs are equal (what our export
writes), else stacked downs with a block-diagonal up, which computes the same sum exactly.

Torch-free and MindSpore-free: the fixture generator runs it beside diffusers.
"""
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from ldm.convert import names_text
from ldm.convert.names_unet import unet_name_table
from ldm.convert.readers import read_weight_file, sniff_format, write_safetensors
from ldm.errors import CheckpointError
from ldm.io.tensor_checks import check_weight, scalar_value

logger = logging.getLogger(__name__)
UNET_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "cond_stage_model.transformer."
KOHYA_UNET, KOHYA_TEXT = "lora_unet_", "lora_te_"
METADATA_KEY = "lora_adapter_metadata"                   # diffusers' save_lora_weights
OURS_DOWN, OURS_UP, OURS_ALPHA = ".lora_down.weight", ".lora_up.weight", "lora_meta.alpha"
OURS_LAYER_ALPHA, OURS_MAGNITUDE = "alpha", ".lora_magnitude_vector"     # <layer>.alpha, DoRA's m
_DORA_WHY = {
    "kohya_lora": "a LyCORIS dora_scale per output row (ours, peft's) is read by A1111 as a norm per input "
                  "column and by some ComfyUI versions against the unadapted weight's norm, so the file would "
                  "load and draw something else there",
    "diffusers_lora": "its DoRA tensors are not written here (not checked against diffusers)",
}
# (suffix, role) of every diffusers/peft adapter name; the module path is what comes before
_DIFFUSERS_SUFFIXES = ((".lora_A.weight", "down"), (".lora_B.weight", "up"),
                       (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
                       (".lora.down.weight", "down"), (".lora.up.weight", "up"),
                       (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
                       (".alpha", "alpha"))
_KOHYA_SUFFIXES = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
_PROCESSOR = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_TEXT_LAYER = re.compile(r"(?:^|[._])encoder[._]layers[._](\d+)[._]")
_UNET_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.")


@dataclass
class LoraFile:
    """Arrays of one LoRA file plus what it says about scaling (safetensors metadata, adapter config)."""
    path: str
    arrays: dict
    metadata: dict = field(default_factory=dict)
    adapter_config: dict = None

    @property
    def layout(self):
        return lora_layout(self.arrays)


@dataclass
class Converted:
    """``entries``: our layer prefix (``...to_q.``) -> (down, up, alpha); the layer computes
    W x + scale * alpha / rank * up @ down x. Downs/ups stay 4-D for conv LoRA."""
    entries: dict
    layout: str
    ignored: list = field(default_factory=list)


def read_safetensors_metadata(path):
    """The ``__metadata__`` dict of a .safetensors header ({} if none); bounds as the tensor reader."""
    from ldm.convert.safetensors_reader import MAX_HEADER
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(MAX_HEADER, os.path.getsize(path) - 8):
            raise CheckpointError(f"{path}: corrupt safetensors header length {length}")
        try:
            meta = json.loads(f.read(length).decode("utf-8")).get("__metadata__") or {}
        except (UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    return {k: v for k, v in meta.items() if isinstance(k, str) and isinstance(v, str)}


def read_lora(path):
    """Read a LoRA file of any layout through the memory-safe readers."""
    arrays = {k: v for k, v in read_weight_file(path).items() if v.dtype.kind != "U"}
    metadata = read_safetensors_metadata(path) if sniff_format(path) == "safetensors" else {}
    adapter_config = None
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "adapter_config.json")
    if os.path.isfile(beside):
        from ldm.io.text import read_utf8
        text = read_utf8(beside, "adapter config")
        try:
            adapter_config = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{beside}: unreadable adapter config ({exc})") from None
    lora = LoraFile(path, arrays, metadata, adapter_config)
    if lora.layout is not None:
        check_lora_tensors(arrays, path)
    return lora


def _is_alpha(name):
    return name == OURS_ALPHA or name.endswith(".alpha")


def check_lora_tensors(arrays, path):
    """Every adapter tensor floating and finite, every alpha one finite number >= 0 (weights whose names
    contain 'lora'; a full checkpoint given as a LoRA keeps its own error)."""
    for name, value in arrays.items():
        if _is_alpha(name):
            alpha_value(name, value, path, rank=1)
        elif "lora" in name.lower() and name.endswith((".weight", "magnitude_vector", "dora_scale")):
            check_weight(name, value, path, "LoRA")     # not MindONE's integer lora_rank entry


def alpha_value(name, value, path, rank):
    """A file's alpha as kohya-ss reads it: 0 means alpha = rank (scale 1). A negative alpha is refused:
    it would apply the adapter reversed, which no trainer writes (a reversed LoRA is a negative
    --lora_scale, said where it is meant)."""
    alpha = scalar_value(name, value, path, "LoRA alpha")
    if alpha < 0:
        raise CheckpointError(f"{path}: {name} is {alpha:g}: a negative LoRA alpha would apply the adapter "
                              "reversed (kohya-ss writes alpha >= 0, 0 = the rank)")
    return float(rank) if alpha == 0 else alpha


def lora_layout(arrays):
    """'mindone' | 'kohya' | 'diffusers' | None from the names of a LoRA file."""
    names = list(arrays)
    if any(n.endswith(OURS_DOWN) and n.startswith(("model.diffusion_model.", "cond_stage_model.")) for n in names):
        return "mindone"
    if any(n.startswith((KOHYA_UNET, KOHYA_TEXT)) for n in names):
        return "kohya"
    if any(n.endswith(tuple(s for s, role in _DIFFUSERS_SUFFIXES if role != "alpha")) or _PROCESSOR.match(n)
           for n in names):
        return "diffusers"
    return None


def unknown_layout_error(path, names, why="holds no LoRA weights of a known layout"):
    shown = ", ".join(sorted(names)[:4])
    return CheckpointError(f"{path} {why} (names: {shown}); LoRA layouts read: ours (MindONE), "
                           "kohya-ss (lora_unet_*/lora_te_* .lora_down/.lora_up/.alpha), diffusers/peft "
                           "(unet./text_encoder. .lora_A/.lora_B or .lora.down/.lora.up)")


# ------------------------------------------------------------------ name tables
@dataclass(frozen=True)
class ModelLayout:
    """What the name tables need: the UNet's config params and the number of text layers kept."""
    unet_params: tuple            # sorted (key, value) pairs, hashable
    text_layers: int

    @classmethod
    def from_config(cls, config):
        from ldm.convert.checkpoint import _text_layers
        from ldm.util import part_params
        params = part_params(config, "unet_config")
        return cls(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())),
                   _text_layers(config))

    @classmethod
    def from_shapes(cls, shapes):
        """From a built model's parameter names -> shapes (load_lora has a model, not its YAML)."""
        return cls(tuple(sorted(unet_params_from_shapes(shapes).items())), text_layers_from_names(shapes))

    def unet_rows(self):
        return unet_name_table(dict(self.unet_params))


def unet_params_from_shapes(shapes):
    """model_channels, channel_mult, num_res_blocks, attention_resolutions, transformer_depth of a
    built UNet, read from its parameter names (the input blocks alone determine them)."""
    first = UNET_PREFIX + "input_blocks.0.0.conv.weight"
    if first not in shapes:
        return {}
    mc = int(shapes[first][0])
    mult, attn, counts, depth, ds, k = [], [], [0], 1, 1, 1
    names = list(shapes)
    while True:
        block = f"{UNET_PREFIX}input_blocks.{k}."
        if block + "0.in_layers_conv.conv.weight" in shapes:
            if counts[-1] == 0:
                mult.append(int(shapes[block + "0.in_layers_conv.conv.weight"][0]) // mc)
            counts[-1] += 1
            tb = {n[len(block) + 21:].split(".", 1)[0] for n in names if n.startswith(block + "1.transformer_blocks.")}
            if tb:
                depth = len(tb)
                if ds not in attn:
                    attn.append(ds)
        elif block + "0.op.conv.weight" in shapes:
            counts.append(0)
            ds *= 2
        else:
            break
        k += 1
    return {"model_channels": mc, "channel_mult": tuple(mult), "num_res_blocks": counts[0],
            "attention_resolutions": tuple(attn), "transformer_depth": depth}


def text_layers_from_names(names):
    key = TEXT_PREFIX + "transformer_layer.resblocks."
    found = {int(n[len(key):].split(".", 1)[0]) for n in names if n.startswith(key)}
    return max(found) + 1 if found else 0


def _module(name):
    return name[:-len(".weight")]


def foreign_module_table(layout):
    """{kohya or diffusers module name: (our layer prefix, q/k/v part index or None)}."""
    table = {}
    for ours, stability, diffusers in layout.unet_rows():
        if not ours.endswith(".weight"):
            continue
        target = (UNET_PREFIX + ours[:-len("weight")], None)
        table["unet." + _module(diffusers)] = target
        for source in (diffusers, stability):
            table[KOHYA_UNET + _module(source).replace(".", "_")] = target
    for ours, source in names_text.text_name_table(layout.text_layers, names_text.HF):
        if not ours.endswith(".weight"):
            continue
        parts = source if isinstance(source, tuple) else (source,)
        for i, part in enumerate(parts):
            target = (TEXT_PREFIX + ours[:-len("weight")], i if len(parts) > 1 else None)
            module = _module(part)
            table["text_encoder." + module] = table["text_encoder.text_model." + module] = target
            table[KOHYA_TEXT + "text_model_" + module.replace(".", "_")] = target
    return table


def our_to_diffusers_table(layout):
    """{our layer prefix: diffusers module name or a (q, k, v) tuple of them} for the export."""
    out = {}
    for ours, _, diffusers in layout.unet_rows():
        if ours.endswith(".weight"):
            out[UNET_PREFIX + ours[:-len("weight")]] = "unet." + _module(diffusers)
    for ours, source in names_text.text_name_table(layout.text_layers, names_text.HF):
        if ours.endswith(".weight"):
            parts = source if isinstance(source, tuple) else (source,)
            names = tuple("text_encoder.text_model." + _module(p) for p in parts)
            out[TEXT_PREFIX + ours[:-len("weight")]] = names if len(names) > 1 else names[0]
    return out


# ------------------------------------------------------------------ parsing foreign names
def _split_kohya(name):
    module, _, suffix = name.partition(".")
    role = _KOHYA_SUFFIXES.get(suffix)
    return (module, role) if role and module.startswith((KOHYA_UNET, KOHYA_TEXT)) else None


def _diffusers_component(module):
    """Normalise a diffusers/peft module path to ``unet.<...>`` or ``text_encoder.<...>``."""
    if module.startswith("base_model.model."):
        module = module[len("base_model.model."):]
        text = module.startswith(("text_model.", "encoder.layers.", "embeddings."))
        return ("text_encoder." if text else "unet.") + module
    if module.startswith(_UNET_ROOTS):
        return "unet." + module
    return module


def _split_diffusers(name):
    m = _PROCESSOR.match(name)
    if m:
        proj = "to_out.0" if m.group(2) == "to_out" else m.group(2)
        return _diffusers_component(f"{m.group(1)}.{proj}"), m.group(3)
    for suffix, role in _DIFFUSERS_SUFFIXES:
        if name.endswith(suffix):
            return _diffusers_component(name[:-len(suffix)]), role
    return None


def group_modules(lora):
    """{foreign module: {"down", "up", "alpha"?}}; one CheckpointError for names of no known kind."""
    layout = lora.layout
    if layout not in ("kohya", "diffusers"):
        raise unknown_layout_error(lora.path, lora.arrays)
    split = _split_kohya if layout == "kohya" else _split_diffusers
    groups, strange = {}, []
    for name, value in lora.arrays.items():
        parsed = split(name)
        if parsed is None:
            strange.append(name)
            continue
        groups.setdefault(parsed[0], {})[parsed[1]] = value
    if strange:
        raise unknown_layout_error(lora.path, strange, f"holds {len(strange)} name(s) of an unsupported LoRA "
                                                       "kind (LyCORIS LoHa/LoKr/Tucker, DoRA, LoRA bias?)")
    incomplete = [m for m, g in groups.items() if not {"down", "up"} <= set(g)]
    if incomplete:
        raise CheckpointError(f"{lora.path}: {len(incomplete)} LoRA module(s) lack a down or up weight, "
                              f"e.g. {sorted(incomplete)[0]}")
    return groups


def _component(module):
    return "text_encoder" if module.startswith((KOHYA_TEXT, "text_encoder.")) else "unet"


# ------------------------------------------------------------------ scaling
def _peft_configs(lora):
    """{component: peft config dict} from the file's metadata or an adapter_config.json beside it."""
    configs = {}
    raw = lora.metadata.get(METADATA_KEY)
    if raw:
        try:
            flat = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"{lora.path}: unreadable {METADATA_KEY} metadata ({exc})") from None
        for key, value in flat.items():
            component, _, field_name = key.partition(".")
            configs.setdefault(component, {})[field_name] = value
    elif lora.adapter_config:
        configs = {"unet": lora.adapter_config, "text_encoder": lora.adapter_config}
    return configs


def _pattern_value(patterns, module):
    """peft's rule: a pattern key matches a module path ending in it at a '.' boundary."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return None


def _alpha(lora, module, group, rank, configs):
    """The alpha such that the adapter's scale is alpha / rank (see the module docstring)."""
    if "alpha" in group:
        return alpha_value(f"{module}.alpha", group["alpha"], lora.path, rank)
    if lora.layout == "kohya":
        return float(rank)
    config = configs.get(_component(module))
    if not config or config.get("lora_alpha") is None:
        return float(rank)
    path = module.split(".", 1)[1]
    alpha = _pattern_value(config.get("alpha_pattern"), path)
    alpha = float(config["lora_alpha"] if alpha is None else alpha)
    return alpha * (rank ** 0.5) if config.get("use_rslora") else alpha


# ------------------------------------------------------------------ conversion
def _ignorable_text(module, layers):
    m = _TEXT_LAYER.search(module)
    return _component(module) == "text_encoder" and m is not None and int(m.group(1)) >= layers


def _fuse_parts(parts, out_dim):
    """Separate q/k/v adapters {index: (down, up, alpha)} -> one adapter of the fused projection."""
    items = [parts[i] for i in sorted(parts)]
    downs, ups = [d.astype(np.float32) for d, _, _ in items], [u.astype(np.float32) for _, u, _ in items]
    factors = [a / d.shape[0] for d, _, a in items]
    if len(parts) == 3 and all(np.array_equal(downs[0], d) for d in downs[1:]) and len(set(factors)) == 1:
        down, up = downs[0], np.concatenate(ups, 0)
        return down, up, factors[0] * down.shape[0]
    rank = sum(d.shape[0] for d in downs)
    up = np.zeros((3 * out_dim, rank), np.float32)
    col = 0
    for i, (d, u, f) in zip(sorted(parts), zip(downs, ups, factors)):
        up[i * out_dim:(i + 1) * out_dim, col:col + d.shape[0]] = u * np.float32(f / factors[0])
        col += d.shape[0]
    return np.concatenate(downs, 0), up, factors[0] * rank


def to_mindone(lora, layout):
    """Convert a kohya or diffusers LoRA (a :class:`LoraFile`) to our layer names for ``layout``."""
    if not isinstance(layout, ModelLayout):
        layout = ModelLayout.from_config(layout)
    groups = group_modules(lora)
    table, configs = foreign_module_table(layout), _peft_configs(lora)
    entries, fused, unknown, ignored = {}, {}, [], []
    for module, group in groups.items():
        target = table.get(module)
        if target is None:
            (ignored if _ignorable_text(module, layout.text_layers) else unknown).append(module)
            continue
        prefix, part = target
        down, up = group["down"], group["up"]
        alpha = _alpha(lora, module, group, down.shape[0], configs)
        if part is None:
            entries[prefix] = (down, up, alpha)
        else:
            fused.setdefault(prefix, {})[part] = (down, up, alpha)
    if unknown:
        raise CheckpointError(f"{lora.path}: {len(unknown)} LoRA module(s) match no layer of this model, e.g. "
                              f"{', '.join(sorted(unknown)[:3])} (SD 1.x/2.x UNet and CLIP text encoder only; "
                              "does the LoRA belong to another model, e.g. SDXL?)")
    for prefix, parts in fused.items():
        if any(p[0].ndim != 2 or p[1].ndim != 2 for p in parts.values()):
            raise CheckpointError(f"{lora.path}: the q/k/v adapters of {prefix}weight are not 2-D")
        entries[prefix] = _fuse_parts(parts, next(iter(parts.values()))[1].shape[0])
    if ignored:
        logger.warning("%s: %d LoRA module(s) of text layers past the %d this model keeps are not used, e.g. %s",
                       lora.path, len(ignored), layout.text_layers, sorted(ignored)[0])
    return Converted(entries, lora.layout, sorted(ignored))


def one_rank(entries):
    """Linear adapters with alpha / rank folded into up and zero-padded to one rank R, alpha R (conv
    entries unchanged): same products, and one alpha for all, which is what our file format holds, so
    save_lora after loading a foreign file writes a file that reloads exactly."""
    linear = {k: v for k, v in entries.items() if v[0].ndim == 2}
    rank = max((d.shape[0] for d, _, _ in linear.values()), default=0)
    out = dict(entries)
    for prefix, (down, up, alpha) in linear.items():
        folded = (np.asarray(up, np.float64) * (alpha / down.shape[0])).astype(np.float32)
        out[prefix] = (_pad(np.asarray(down, np.float32), rank, 0), _pad(folded, rank, 1), float(rank))
    return out


def summary(lora):
    """{"rank", "unet", "text_encoder"} of a kohya/diffusers file, read without a model."""
    groups = group_modules(lora)
    ranks = {int(g["down"].shape[0]) for g in groups.values()}
    return {"rank": ranks.pop() if len(ranks) == 1 else None,
            "unet": sum(_component(m) == "unet" for m in groups),
            "text_encoder": sum(_component(m) == "text_encoder" for m in groups)}


# ------------------------------------------------------------------ export
def mindone_entries(arrays, path="LoRA file"):
    """{prefix: (down, up, alpha)} of a file in our layout (one alpha for all, default rank; 0 = rank;
    a layer's own ``<prefix>alpha`` wins over the file's)."""
    alpha = arrays.get(OURS_ALPHA)
    out = {}
    for name, down in arrays.items():
        if name.endswith(OURS_DOWN):
            prefix = name[:-len(OURS_DOWN) + 1]
            up = arrays.get(prefix + OURS_UP[1:])
            if up is None:
                raise CheckpointError(f"LoRA weight {name} has no {prefix}{OURS_UP[1:]}")
            rank = down.shape[0]
            own = arrays.get(prefix + OURS_LAYER_ALPHA)
            if own is not None:
                out[prefix] = (down, up, alpha_value(prefix + OURS_LAYER_ALPHA, own, path, rank))
            else:
                out[prefix] = (down, up, alpha_value(OURS_ALPHA, alpha, path, rank) if alpha is not None
                               else float(rank))
    return out


def mindone_magnitudes(arrays, path="LoRA file"):
    """{prefix: DoRA magnitude (out,)} of a file in our layout; each must belong to an adapter."""
    out = {}
    for name, value in arrays.items():
        if name.endswith(OURS_MAGNITUDE):
            prefix = name[:-len(OURS_MAGNITUDE) + 1]
            if prefix + OURS_DOWN[1:] not in arrays:
                raise CheckpointError(f"{path}: DoRA magnitude {name} has no {prefix}{OURS_DOWN[1:]}")
            out[prefix] = np.asarray(value)
    return out


def _refuse_dora(arrays, path, target):
    dora = sorted(n for n in arrays if n.endswith(OURS_MAGNITUDE))
    if dora:
        raise CheckpointError(f"{path} holds DoRA adapters ({len(dora)} x *{OURS_MAGNITUDE}), which --to {target} "
                              f"does not write: {_DORA_WHY[target]}; sample with text_to_image.py "
                              "--lora_ckpt_path (DoRA is merged there)")


def _pad(array, rank, axis):
    """Zero rows (down) or columns (up) up to ``rank``: the product, so the adapter, is unchanged."""
    missing = rank - array.shape[axis]
    if missing:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, missing)
        array = np.pad(array, widths)
    return np.ascontiguousarray(array)


def diffusers_lora_state(entries, layout):
    """Our adapters -> diffusers/peft names (``unet.<module>.lora_A.weight`` ...). alpha / rank is
    folded into lora_B and every adapter is zero-padded to one rank, so the file needs no alpha or
    rank metadata: without it diffusers sets lora_alpha = r, scale 1 (0.35.2 scaled modules whose rank
    differs from the most common one by r_common / r_i: a fused text in_proj exported at rank 4 among
    rank-2 layers was off by 2.9 in the fixture run)."""
    if not isinstance(layout, ModelLayout):
        layout = ModelLayout.from_config(layout)
    names, out, unknown = our_to_diffusers_table(layout), {}, []
    rank = max((down.shape[0] for down, _, _ in entries.values()), default=0)
    for prefix, (down, up, alpha) in entries.items():
        target = names.get(prefix)
        if target is None:
            unknown.append(prefix + "weight")
            continue
        if down.ndim != 2:
            raise CheckpointError(f"cannot export the conv LoRA of {prefix}weight (only linear adapters)")
        b = _pad(((up.astype(np.float64) * (alpha / down.shape[0])).astype(np.float32)), rank, axis=1)
        down = _pad(np.asarray(down, np.float32), rank, axis=0)
        if isinstance(target, tuple):   # fused in_proj -> q/k/v sharing one down
            for module, part in zip(target, np.split(b, 3, axis=0)):
                out[module + ".lora_A.weight"], out[module + ".lora_B.weight"] = down, np.ascontiguousarray(part)
        else:
            out[target + ".lora_A.weight"], out[target + ".lora_B.weight"] = down, b
    if unknown:
        raise CheckpointError(f"cannot export {len(unknown)} LoRA layer(s) with no diffusers name, e.g. "
                              f"{unknown[0]} (does the config match the LoRA?)")
    return out


def export_diffusers_lora(entries, layout, path):
    """Write adapters ({prefix: (down, up, alpha)}) as a diffusers LoRA .safetensors at ``path``."""
    write_safetensors(diffusers_lora_state(entries, layout), path, metadata={"format": "pt"})
    return path


def _kohya_module(name):
    """A diffusers module name (``unet.<...>`` / ``text_encoder.text_model.<...>``) as kohya-ss writes
    it: ``lora_unet_<...>`` / ``lora_te_text_model_<...>`` with '.' -> '_'."""
    component, _, module = name.partition(".")
    return (KOHYA_UNET if component == "unet" else KOHYA_TEXT) + module.replace(".", "_")


def kohya_lora_state(entries, layout):
    """Our adapters -> kohya-ss names (what A1111, ComfyUI and sd-scripts read): per module
    ``<name>.lora_down.weight``, ``<name>.lora_up.weight`` and ``<name>.alpha`` (a 0-d float32, scale
    alpha / rank), each module at its own rank and alpha; conv adapters keep kohya's LoCon shapes
    (down (r, in, k, k), up (out, r, 1, 1)); the fused text ``in_proj`` becomes q/k/v modules that
    share its down. UNet module paths are diffusers' (as sd-scripts names them)."""
    if not isinstance(layout, ModelLayout):
        layout = ModelLayout.from_config(layout)
    names, out, unknown = our_to_diffusers_table(layout), {}, []
    for prefix, (down, up, alpha) in entries.items():
        target = names.get(prefix)
        if target is None:
            unknown.append(prefix + "weight")
            continue
        down, up = np.ascontiguousarray(down, np.float32), np.asarray(up, np.float32)
        if down.ndim == 4 and up.ndim == 2:
            up = up.reshape(up.shape + (1, 1))
        alpha = np.asarray(alpha, np.float32).reshape(())
        parts = zip(target, np.split(up, 3, axis=0)) if isinstance(target, tuple) else [(target, up)]
        for module, part in parts:
            key = _kohya_module(module)
            out[key + ".lora_down.weight"], out[key + ".lora_up.weight"] = down, np.ascontiguousarray(part)
            out[key + ".alpha"] = alpha
    if unknown:
        raise CheckpointError(f"cannot export {len(unknown)} LoRA layer(s) with no kohya-ss name, e.g. "
                              f"{unknown[0]} (does the config match the LoRA?)")
    return out


def _kohya_metadata(entries):
    """sd-scripts' training metadata that loaders show (``ss_network_*``; strings, as safetensors needs)."""
    def common(values):
        return max(set(values), key=values.count) if values else None
    linear = [(d.shape[0], a) for d, _, a in entries.values() if d.ndim == 2]
    conv = [(d.shape[0], a) for d, _, a in entries.values() if d.ndim == 4]
    meta = {"ss_network_module": "networks.lora"}
    if linear:
        rank, alpha = common(linear)
        meta.update(ss_network_dim=str(rank), ss_network_alpha=f"{alpha:g}")
    if conv:
        rank, alpha = common(conv)
        meta["ss_network_args"] = json.dumps({"conv_dim": str(rank), "conv_alpha": f"{alpha:g}"})
    return meta


def export_lora_file(lora_path, config, out_path, to="diffusers_lora"):
    """Our LoRA file (.ckpt from save_lora / training) -> a .safetensors LoRA of another tool: ``to``
    "diffusers_lora" (``StableDiffusionPipeline.load_lora_weights`` reads it; linear adapters only) or
    "kohya_lora" (kohya-ss names: A1111, ComfyUI, sd-scripts; conv adapters as LoCon). DoRA files are
    refused (one line). ``config``: the model YAML (path or dict)."""
    from ldm.util import load_config
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    lora = read_lora(lora_path)
    if lora.layout != "mindone":
        raise CheckpointError(f"{lora_path} is not a LoRA file in our layout (*{OURS_DOWN} names)")
    if to not in _DORA_WHY:
        raise ValueError(f"export_lora_file: unknown target {to!r}")
    _refuse_dora(lora.arrays, lora_path, to)
    entries, layout = mindone_entries(lora.arrays, lora.path), ModelLayout.from_config(cfg)
    if to == "kohya_lora":
        write_safetensors(kohya_lora_state(entries, layout), out_path, metadata=_kohya_metadata(entries))
        return out_path
    return export_diffusers_lora(entries, layout, out_path)
