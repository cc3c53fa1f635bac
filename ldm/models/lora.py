"""LoRA (Hu et al. 2021): low-rank adapters added to attention projections, saved as a small file.

A target layer y = W x + b becomes y = W x + b + scale * up(down(x)) with down: (rank, in),
up: (out, rank), scale = alpha / rank * user_scale. ``up`` starts at zero, so an injected model
computes exactly what the base model did. The layer keeps its class behaviour and its parameter
names (the base weights stay ``...to_q.weight``); the adapters are named
``<layer>.lora_down.weight`` / ``<layer>.lora_up.weight`` after the layer's weight, so a LoRA file
holds MindONE-style full names and nothing else.

Targets: UNet attention ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (or ``to_out``); text-encoder
attention ``in_proj``/``out_proj`` (OpenCLIP/MindONE layout) or ``q_proj``/``k_proj``/``v_proj``.

API (used by training and by ldm.pipeline / text_to_image.py --lora_ckpt_path --lora_scale):
``inject_lora(net, rank, alpha=None, ...) -> list of new Parameters``; ``save_lora(model, path)``;
``load_lora(model, path, scale=1.0)``; ``merge_lora(model)``; ``lora_param_count(net, rank, ...)``.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from ldm.errors import CheckpointError

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "to_out")
TEXT_TARGETS = ("in_proj", "out_proj", "q_proj", "k_proj", "v_proj")
DOWN, UP = "lora_down.weight", "lora_up.weight"
ALPHA_KEY = "lora_meta.alpha"
RANK_KEY = "lora_rank"                      # MindONE's LoRA files record their rank under this name
UNET_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "cond_stage_model."
_LORA_CLASSES = {}


def _lora_class(base_cls):
    """A subclass of ``base_cls`` whose construct adds the low-rank path (one per base class)."""
    if getattr(base_cls, "_is_lora", False):
        return base_cls
    if base_cls not in _LORA_CLASSES:
        def construct(self, x):
            if self.lora_dtype is not None:
                return _dense_in_dtype(self, x, self.lora_dtype)
            if x.dtype != self.weight.dtype:   # cast by amp's to_float: the inherited construct would not cast W
                return _dense_in_dtype(self, x, x.dtype)
            out = base_cls.construct(self, x)
            flat = x.reshape((-1, x.shape[-1]))
            delta = ops.matmul(ops.matmul(flat, self.lora_down.T), self.lora_up.T)
            return out + (self.lora_scale * delta).reshape(out.shape).astype(out.dtype)

        _LORA_CLASSES[base_cls] = type(f"LoRA{base_cls.__name__}", (base_cls,),
                                       {"construct": construct, "_is_lora": True, "_lora_base": base_cls})
    return _LORA_CLASSES[base_cls]


def _dense_in_dtype(cell, x, dtype):
    """MindONE's ``lora_fp16``: base projection and adapters computed in ``dtype`` from the fp32 weights,
    the result returned in ``x``'s dtype. Written out (not ``to_float``): under ms.jit a cast cell's
    inherited construct left its weight fp32 against fp16 inputs (MatMul type error, MindSpore 2.8 CPU)."""
    flat = x.reshape((-1, x.shape[-1])).astype(dtype)
    out = ops.matmul(flat, cell.weight.astype(dtype).T)
    if cell.bias is not None:
        out = out + cell.bias.astype(dtype)
    out = out + cell.lora_scale * ops.matmul(ops.matmul(flat, cell.lora_down.astype(dtype).T),
                                             cell.lora_up.astype(dtype).T)
    return out.reshape(x.shape[:-1] + (out.shape[-1],)).astype(x.dtype)


def _matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def find_targets(net, targets):
    """(name, cell) of every layer in ``net`` with a 2-D ``weight`` whose name ends with a target."""
    found = []
    for name, cell in net.cells_and_names():
        weight = getattr(cell, "weight", None)
        if isinstance(weight, Parameter) and len(weight.shape) == 2 and _matches(name, targets):
            found.append((name, cell))
    # "to_out" is a SequentialCell in MindONE's layout (Dense + Dropout): then only "to_out.0" has a weight
    return found


def _weight_prefix(cell):
    return cell.weight.name[:-len("weight")]


def _attach(cell, rank, alpha, user_scale=1.0, seed=0):
    out_dim, in_dim = cell.weight.shape
    prefix = _weight_prefix(cell)
    rng = np.random.default_rng(seed)
    down = rng.normal(0.0, 1.0 / rank, size=(rank, in_dim)).astype(np.float32)
    cell.lora_down = Parameter(Tensor(down), name=prefix + DOWN, requires_grad=True)
    cell.lora_up = Parameter(Tensor(np.zeros((out_dim, rank), np.float32)), name=prefix + UP, requires_grad=True)
    cell.lora_alpha = float(alpha)
    cell.lora_rank = int(rank)
    cell.lora_scale = float(alpha) / rank * float(user_scale)
    cell.lora_dtype = None          # None: the layer's own dtype; ms.float16 for MindONE's lora_fp16
    cell.__class__ = _lora_class(type(cell))
    return [cell.lora_down, cell.lora_up]


def inject_lora(net, rank=4, alpha=None, targets=None, text_encoder=False, scale=1.0, seed=0):
    """Add LoRA adapters to every target layer of ``net`` (in place); returns the new Parameters.

    ``alpha`` defaults to ``rank`` (scale 1). ``targets`` defaults to the UNet attention projections,
    or the text-encoder ones with ``text_encoder=True``.
    """
    targets = targets or (TEXT_TARGETS if text_encoder else UNET_TARGETS)
    alpha = float(alpha) if alpha else float(rank)
    layers = find_targets(net, targets)
    if not layers:
        raise CheckpointError(f"no LoRA target layers ({', '.join(targets)}) in {type(net).__name__}")
    params = []
    for i, (_, cell) in enumerate(layers):
        if getattr(type(cell), "_is_lora", False):
            continue
        params += _attach(cell, rank, alpha, scale, seed=seed + i)
    return params


def lora_param_count(net, rank, targets=None, text_encoder=False):
    """The LoRA formula: sum over target layers of rank * (in_features + out_features)."""
    targets = targets or (TEXT_TARGETS if text_encoder else UNET_TARGETS)
    return sum(rank * (c.weight.shape[0] + c.weight.shape[1]) for _, c in find_targets(net, targets))


def lora_layers(model):
    return [cell for _, cell in model.cells_and_names() if getattr(type(cell), "_is_lora", False)]


def lora_parameters(model):
    params = []
    for cell in lora_layers(model):
        params += [cell.lora_down, cell.lora_up]
    return params


def save_lora(model, path):
    """Write only the LoRA parameters of ``model`` (plus alpha) to ``path``, atomically."""
    from ldm.io.ms_checkpoint import atomic_save
    layers = lora_layers(model)
    if not layers:
        raise CheckpointError("save_lora: the model has no LoRA layers")
    entries = [{"name": p.name, "data": p} for p in lora_parameters(model)]
    entries.append({"name": ALPHA_KEY, "data": Tensor(np.float32(layers[0].lora_alpha))})
    return atomic_save(entries, path)


def load_lora(model, path, scale=1.0, prefixes=None):
    """Inject (if needed) and load a LoRA file into ``model``; ``scale`` multiplies alpha/rank.

    The file is ours (MindONE names, one alpha), or kohya-ss or diffusers/peft (.safetensors), whose
    module names and per-module alphas :mod:`ldm.convert.lora_formats` converts to ours (each alpha/rank
    folded into up, zero-padded to one rank, so that save_lora's single alpha holds). Linear
    adapters become adapters here; conv LoRA (kohya LoCon, peft on Conv2d, SD 1.x's 1x1 proj_in/out)
    has no adapter class, so it is merged into the conv weight, W += scale * alpha/rank * up @ down,
    and taken out again when a later load_lora (another scale or file) replaces it.
    Every adapter in the file must find its layer (by the layer's weight name), else CheckpointError.
    ``prefixes``: load only the adapters whose names start with one of them (e.g. ``UNET_PREFIX``,
    as MindONE's --lora_ft_unet / --lora_ft_text_encoder choose); None loads all.
    """
    from ldm.convert import lora_formats
    lora = lora_formats.read_lora(path)
    if lora.layout == "mindone":
        entries = lora_formats.mindone_entries(lora.arrays, path)
    elif lora.layout is None:
        raise lora_formats.unknown_layout_error(path, lora.arrays)
    else:
        shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
        entries = lora_formats.to_mindone(lora, lora_formats.ModelLayout.from_shapes(shapes)).entries
        entries = lora_formats.one_rank(entries)       # per-module alphas/ranks -> one alpha, as save_lora writes
    if not entries:
        raise CheckpointError(f"{path} holds no LoRA weights (*.{DOWN})")
    if prefixes is not None:
        entries = {k: v for k, v in entries.items() if k.startswith(tuple(prefixes))}
        if not entries:
            raise CheckpointError(f"{path} holds no LoRA weights under {', '.join(prefixes)}")
    cells = {}
    for _, cell in model.cells_and_names():
        weight = getattr(cell, "weight", None)
        if isinstance(weight, Parameter) and len(weight.shape) in (2, 4):
            cells[_weight_prefix(cell)] = cell
    unknown = sorted(set(entries) - set(cells))
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} LoRA layer(s) not in this model, e.g. {unknown[0]}weight")
    _unmerge_conv(model)
    for prefix, (down, up, alpha) in entries.items():
        cell = cells[prefix]
        if len(cell.weight.shape) == 4:
            _merge_conv(model, cell, down, up, alpha, scale, path)
            continue
        down, up = _as_linear(down), _as_linear(up)
        if (down is None or up is None or up.shape != (cell.weight.shape[0], down.shape[0])
                or down.shape[1] != cell.weight.shape[1]):
            raise CheckpointError(f"{path}: LoRA weights for {prefix}weight do not fit its shape {cell.weight.shape}")
        rank = down.shape[0]
        if not getattr(type(cell), "_is_lora", False) or cell.lora_down.shape != down.shape:
            if getattr(type(cell), "_is_lora", False):
                cell.__class__ = type(cell)._lora_base     # a different rank: new adapters
            _attach(cell, rank, alpha)
        cell.lora_down.set_data(Tensor(down.astype(np.float32)))
        cell.lora_up.set_data(Tensor(up.astype(np.float32)))
        cell.lora_alpha = float(alpha)
        cell.lora_scale = float(alpha) / rank * float(scale)
    return len(entries)


def _as_linear(weight):
    """A LoRA down/up as a matrix: 1x1-kernel conv LoRA on a Dense layer squeezes; other 4-D: None."""
    weight = np.asarray(weight)
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        return weight[:, :, 0, 0]
    return weight if weight.ndim == 2 else None


_MERGED = "_lora_merged_conv"      # model attribute: {weight Parameter name: (Parameter, merged delta)}


def _merge_conv(model, cell, down, up, alpha, scale, path):
    weight = cell.weight
    rank = down.shape[0]
    up2 = np.asarray(up, np.float64).reshape(up.shape[0], -1)
    down2 = np.asarray(down, np.float64).reshape(rank, -1)
    if up2.shape[1] != rank or up2.shape[0] * down2.shape[1] != int(np.prod(weight.shape)):
        raise CheckpointError(f"{path}: conv LoRA weights for {weight.name} do not fit its shape {weight.shape}")
    delta = (float(scale) * float(alpha) / rank * (up2 @ down2)).reshape(weight.shape)
    dtype = ms.dtype_to_nptype(weight.dtype)
    weight.set_data(Tensor((weight.asnumpy().astype(np.float64) + delta).astype(dtype)))
    model.__dict__.setdefault(_MERGED, {})[weight.name] = (weight, delta)


def _unmerge_conv(model):
    """Take out conv LoRA merged by an earlier load_lora, so loads replace rather than add up."""
    for weight, delta in model.__dict__.pop(_MERGED, {}).values():
        dtype = ms.dtype_to_nptype(weight.dtype)
        weight.set_data(Tensor((weight.asnumpy().astype(np.float64) - delta).astype(dtype)))


def lora_file_summary(path):
    """What a LoRA file holds, read without a model: {"rank": adapters' rank (None if they disagree),
    "recorded_rank": the file's ``lora_rank`` entry or None, "unet": count, "text_encoder": count}.
    kohya/diffusers files count their modules (q/k/v separately)."""
    from ldm.convert import lora_formats
    lora = lora_formats.read_lora(path)
    arrays = lora.arrays
    if lora.layout in ("kohya", "diffusers"):
        return dict(lora_formats.summary(lora), recorded_rank=None)
    downs = {k: v for k, v in arrays.items() if k.endswith(DOWN)}
    ranks = {int(v.shape[0]) for v in downs.values()}
    recorded = arrays.get(RANK_KEY)
    return {"rank": ranks.pop() if len(ranks) == 1 else None,
            "recorded_rank": None if recorded is None else int(np.asarray(recorded).reshape(-1)[0]),
            "unet": sum(k.startswith(UNET_PREFIX) for k in downs),
            "text_encoder": sum(k.startswith(TEXT_PREFIX) for k in downs)}


def merge_lora(model):
    """Fold every adapter into its base weight (W += scale * up @ down) and remove the adapters,
    leaving a plain model with the original parameter names. Returns the number of merged layers."""
    layers = lora_layers(model)
    for cell in layers:
        w = cell.weight.asnumpy().astype(np.float64)
        delta = cell.lora_up.asnumpy().astype(np.float64) @ cell.lora_down.asnumpy().astype(np.float64)
        cell.weight.set_data(Tensor((w + cell.lora_scale * delta).astype(ms.dtype_to_nptype(cell.weight.dtype))))
        cell.__class__ = type(cell)._lora_base
        for attr in ("lora_down", "lora_up"):
            delattr(cell, attr)
        for attr in ("lora_alpha", "lora_rank", "lora_scale", "lora_dtype"):
            cell.__dict__.pop(attr, None)
    return len(layers)


def lora_file_fraction(lora_path, base_num_params):
    """Size of a LoRA file relative to fp32 base weights (bytes / (4 * params))."""
    import os
    return os.path.getsize(lora_path) / (4.0 * base_num_params) if base_num_params else math.inf
