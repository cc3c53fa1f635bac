"""LoRA (Hu et al. 2021): low-rank adapters added to attention projections (and, as kohya-ss's LoCon,
to the UNet's 3x3 convolutions), optionally weight-decomposed (DoRA), saved as a small file.

A target layer y = W x + b becomes y = W x + b + scale * up(down(x)) with down: (rank, in),
up: (out, rank), scale = alpha / rank * user_scale. ``up`` starts at zero, so an injected model
computes exactly what the base model did. The layer keeps its class behaviour and its parameter
names (the base weights stay ``...to_q.weight``); the adapters are named
``<layer>.lora_down.weight`` / ``<layer>.lora_up.weight`` after the layer's weight, so a LoRA file
holds MindONE-style full names and nothing else.

Targets: UNet attention ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (or ``to_out``); text-encoder
attention ``in_proj``/``out_proj`` (OpenCLIP/MindONE layout) or ``q_proj``/``k_proj``/``v_proj``.
With ``conv_rank`` (kohya's ``conv_dim``) also every Conv2d with a kernel larger than 1x1 inside a
``ResBlock``, ``Downsample`` or ``Upsample`` (kohya's LoCon targets: ResnetBlock2D, Downsample2D,
Upsample2D): down is a k x k conv to ``rank`` channels with the layer's stride and padding, up a 1x1
conv, so the adapter is the conv with kernel up @ down (kohya's shapes: down (r, in, k, k), up (out, r, 1, 1)).

DoRA (Liu et al. 2024, as peft): W' = m * V / ||V|| with V = W + scale * up @ down, the norm taken per
output row (over the input dims; per output channel for a conv) and the magnitude m (out,) trained,
initialised to ||W||, so the injected layer starts as the base layer. As peft, the norm is a constant
for the gradient (the paper's section 4.3), and the layer computes base(x) + (f - 1) W x +
f * scale * up(down(x)) with f = m / ||V||, which is the base output exactly while f == 1 and up == 0.

File layout (ours): ``<layer>.lora_down.weight``, ``<layer>.lora_up.weight`` (2-D, or 4-D for a conv),
``lora_meta.alpha`` (one alpha), ``<layer>.alpha`` where a layer's alpha differs from it (per-module
ranks come from the shapes), ``<layer>.lora_magnitude_vector`` (DoRA's m, shape (out,)).

API (used by training and by ldm.pipeline / text_to_image.py --lora_ckpt_path --lora_scale):
``inject_lora(net, rank, alpha=None, ..., conv_rank=0, dora=False, rank_pattern=None) -> list of new
Parameters``; ``save_lora(model, path)``; ``load_lora(model, path, scale=1.0)``; ``merge_lora(model)``;
``lora_param_count(net, rank, ...)``; :class:`RankPattern` (peft's rank_pattern / alpha_pattern).
"""
import math
import re

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ldm.errors import CheckpointError

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "to_out")
TEXT_TARGETS = ("in_proj", "out_proj", "q_proj", "k_proj", "v_proj")
DOWN, UP = "lora_down.weight", "lora_up.weight"
ALPHA_KEY = "lora_meta.alpha"
OTHER_BASE = " (a LoRA made for another base model, e.g. SD 1.x adapters on an SD 2.x model?)"
RANK_KEY = "lora_rank"                      # MindONE's LoRA files record their rank under this name
UNET_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "cond_stage_model."
CONV_PARENTS = ("ResBlock", "Downsample", "Upsample")   # class names whose k x k convs take conv LoRA
MAGNITUDE = "lora_magnitude_vector"         # DoRA's trained magnitude m, (out,), peft's name
MODULE_ALPHA = "alpha"                      # <layer>.alpha: a layer's own alpha (kohya's key)
DORA_EPS = 1e-12                            # a zero row (zero-initialised layer) gives f = m / eps = 0, not NaN
_LORA_CLASSES = {}


def _lora_class(base_cls):
    """A subclass of ``base_cls`` whose construct adds the low-rank path (one per base class): a Dense
    gets the matmul path, a Conv2d the k x k down / 1x1 up conv path."""
    if getattr(base_cls, "_is_lora", False):
        return base_cls
    if base_cls not in _LORA_CLASSES:
        if issubclass(base_cls, nn.Conv2d):
            construct = _conv_construct
        else:
            def construct(self, x):
                if self.lora_dora:
                    return _dora_dense(self, x, x.dtype if self.lora_dtype is None else self.lora_dtype)
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


def _row_norm(v):
    """||v|| per output row: over every axis but the first (DoRA's norm; peft's ``weight_norm``)."""
    return ops.sqrt((v * v).sum(axis=tuple(range(1, v.ndim))))


def _dora_factor(cell):
    """f = m / ||W + scale * up @ down|| per output row, fp32, the norm a constant for the gradient."""
    weight = cell.weight.astype(ms.float32)
    rank = cell.lora_down.shape[0]
    delta = ops.matmul(cell.lora_up.reshape((cell.lora_up.shape[0], rank)),
                       cell.lora_down.reshape((rank, -1))).reshape(weight.shape)
    norm = ops.stop_gradient(_row_norm(weight + cell.lora_scale * delta))
    return cell.lora_magnitude / ops.maximum(norm, DORA_EPS)


def _dora_dense(cell, x, dtype):
    """DoRA on a Dense, computed in ``dtype``: base(x) + (f - 1) W x + f * scale * up(down(x)). With the
    Dense's own MatMul/BiasAdd, so f == 1 and up == 0 give the base layer's output bit for bit."""
    flat = x.reshape((-1, x.shape[-1])).astype(dtype)
    lin = cell.matmul(flat, cell.weight.astype(dtype))
    low = ops.matmul(ops.matmul(flat, cell.lora_down.astype(dtype).T), cell.lora_up.astype(dtype).T)
    factor = _dora_factor(cell).astype(dtype)
    out = lin + (factor - 1) * lin + factor * (cell.lora_scale * low)
    if cell.has_bias:
        out = cell.bias_add(out, cell.bias.astype(dtype))
    return out.reshape(x.shape[:-1] + (out.shape[-1],)).astype(x.dtype)


def _conv_construct(self, x):
    """Conv LoRA (and conv DoRA): W * x + scale * up(down(x)) in ``lora_dtype`` (else ``x``'s dtype), the
    bias added last. Two small convs, not a merged kernel: the weight gradient of a full-size conv is
    the slow part of MindSpore's CPU backward (docs/DESIGN measurements), the rank-r ones are cheap."""
    dtype = x.dtype if self.lora_dtype is None else self.lora_dtype
    xc = x.astype(dtype)
    lin = self.conv2d(xc, self.weight.astype(dtype))
    low = self.lora_up_conv(self.lora_down_conv(xc, self.lora_down.astype(dtype)), self.lora_up.astype(dtype))
    if self.lora_dora:
        factor = _dora_factor(self).astype(dtype).reshape((1, -1, 1, 1))
        out = lin + (factor - 1) * lin + factor * (self.lora_scale * low)
    else:
        out = lin + self.lora_scale * low
    if self.has_bias:
        out = self.bias_add(out, self.bias.astype(dtype))
    return out.astype(x.dtype)


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


def find_conv_targets(net):
    """(name, cell) of every Conv2d with a kernel larger than 1x1 (and no groups) inside a ResBlock,
    Downsample or Upsample of ``net``: kohya's LoCon targets (its 1x1 shortcut and time-embedding
    Linear, which kohya gives the linear rank, are not adapted here)."""
    found, seen = [], set()
    for name, cell in net.cells_and_names():
        if type(cell).__name__ not in CONV_PARENTS:
            continue
        for sub_name, sub in cell.cells_and_names(name_prefix=name):
            weight = getattr(sub, "weight", None)
            if (isinstance(sub, nn.Conv2d) and isinstance(weight, Parameter) and len(weight.shape) == 4
                    and weight.shape[2] * weight.shape[3] > 1 and sub.group == 1 and id(sub) not in seen):
                seen.add(id(sub))
                found.append((sub_name, sub))
    return found


def _weight_prefix(cell):
    return cell.weight.name[:-len("weight")]


def layer_name(cell):
    """The name rank patterns match and files use: the layer's weight name without ``.weight``."""
    return _weight_prefix(cell)[:-1]


def _is_adapted(cell):
    return getattr(type(cell), "_is_lora", False)


def _attach(cell, rank, alpha, user_scale=1.0, seed=0, dora=False):
    """New adapters on ``cell``: down random, up zero (linear: N(0, 1/rank) as before; conv: kohya's
    kaiming-uniform bound 1/sqrt(in * k * k)), DoRA's magnitude = ||W|| per output row."""
    shape = tuple(cell.weight.shape)
    prefix = _weight_prefix(cell)
    rng = np.random.default_rng(seed)
    if len(shape) == 4:
        out_dim, in_dim, kh, kw = shape
        bound = 1.0 / math.sqrt(in_dim * kh * kw)
        down = rng.uniform(-bound, bound, size=(rank, in_dim, kh, kw)).astype(np.float32)
        up = np.zeros((out_dim, rank, 1, 1), np.float32)
        cell.lora_down_conv = ops.Conv2D(out_channel=rank, kernel_size=(kh, kw), mode=1, pad_mode=cell.pad_mode,
                                         pad=cell.padding, stride=cell.stride, dilation=cell.dilation, group=1,
                                         data_format=cell.data_format)
        cell.lora_up_conv = ops.Conv2D(out_channel=out_dim, kernel_size=1, mode=1, pad_mode="valid", pad=0,
                                       stride=1, dilation=1, group=1, data_format=cell.data_format)
    else:
        out_dim, in_dim = shape
        down = rng.normal(0.0, 1.0 / rank, size=(rank, in_dim)).astype(np.float32)
        up = np.zeros((out_dim, rank), np.float32)
    cell.lora_down = Parameter(Tensor(down), name=prefix + DOWN, requires_grad=True)
    cell.lora_up = Parameter(Tensor(up), name=prefix + UP, requires_grad=True)
    cell.lora_alpha = float(alpha)
    cell.lora_rank = int(rank)
    cell.lora_scale = float(alpha) / rank * float(user_scale)
    cell.lora_dtype = None          # None: the layer's own dtype; ms.float16 for MindONE's lora_fp16
    cell.lora_dora = bool(dora)
    params = [cell.lora_down, cell.lora_up]
    if dora:        # the same op sequence as _dora_factor: f is exactly 1 at the start (PyNative)
        norm = _row_norm(cell.weight.astype(ms.float32) + cell.lora_scale * ops.zeros(shape, ms.float32))
        cell.lora_magnitude = Parameter(norm, name=prefix + MAGNITUDE, requires_grad=True)
        params.append(cell.lora_magnitude)
    cell.__class__ = _lora_class(type(cell))
    return params


def _detach(cell):
    """Remove a layer's adapters (nothing merged): the base class and parameters again."""
    if not _is_adapted(cell):
        return
    cell.__class__ = type(cell)._lora_base
    for attr in ("lora_down", "lora_up", "lora_magnitude", "lora_down_conv", "lora_up_conv"):
        if hasattr(cell, attr):
            delattr(cell, attr)
        cell.__dict__.get("_primitives", {}).pop(attr, None)
    for attr in ("lora_alpha", "lora_rank", "lora_scale", "lora_dtype", "lora_dora"):
        cell.__dict__.pop(attr, None)


class RankPattern:
    """Per-layer rank / alpha, as peft's ``rank_pattern`` / ``alpha_pattern``: each key is a regular
    expression that must match a whole dotted suffix of a layer name (peft's rule ``(.*\\.)?(key)$``,
    so ``to_k`` matches every ``...attn1.to_k``, ``middle_block\\..*`` a block); the first key that
    matches (in file order) decides. ``rules``: [(key, rank or None, alpha or None)]. Keys that matched
    no adapted layer are listed by :meth:`unused` (a typo must not silently train the default rank)."""

    def __init__(self, rules, source="rank pattern"):
        self.source = source
        self.rules = []
        for key, rank, alpha in rules:
            try:
                regex = re.compile(rf"(?:.*\.)?(?:{key})")
            except re.error as exc:
                raise CheckpointError(f"{source}: key {key!r} is not a regular expression ({exc})") from None
            self.rules.append((key, regex, rank, alpha))
        self.used = set()

    def lookup(self, name):
        """(rank or None, alpha or None) of the first key matching ``name``, or None."""
        for key, regex, rank, alpha in self.rules:
            if regex.fullmatch(name):
                self.used.add(key)
                return rank, alpha
        return None

    def unused(self):
        return [key for key, _, _, _ in self.rules if key not in self.used]

    def check_used(self, example=None):
        unused = self.unused()
        if unused:
            hint = f"; layer names look like {example}" if example else ""
            raise CheckpointError(f"{self.source}: {len(unused)} key(s) match no LoRA layer: "
                                  f"{', '.join(repr(k) for k in unused)} (keys are regular expressions matched "
                                  f"against whole dotted name suffixes of the adapted layers{hint})")


def inject_lora(net, rank=4, alpha=None, targets=None, text_encoder=False, scale=1.0, seed=0,
                conv_rank=0, conv_alpha=None, dora=False, rank_pattern=None):
    """Add LoRA adapters to every target layer of ``net`` (in place); returns the new Parameters.

    ``alpha`` defaults to ``rank`` (scale 1). ``targets`` defaults to the UNet attention projections,
    or the text-encoder ones with ``text_encoder=True``. ``conv_rank`` > 0 also adapts the k x k convs
    of :func:`find_conv_targets` (kohya's conv_dim), with ``conv_alpha`` (default: conv_rank).
    ``dora``: weight-decomposed adapters (a magnitude Parameter per layer too). ``rank_pattern``: a
    :class:`RankPattern` overriding rank and/or alpha per layer (an alpha it leaves unset stays
    ``alpha`` / ``conv_alpha``, and 0 or None means the layer's rank, as peft's lora_alpha does).
    """
    targets = targets or (TEXT_TARGETS if text_encoder else UNET_TARGETS)
    layers = [(cell, rank, alpha) for _, cell in find_targets(net, targets)]
    if not layers:
        raise CheckpointError(f"no LoRA target layers ({', '.join(targets)}) in {type(net).__name__}")
    if conv_rank:
        layers += [(cell, conv_rank, conv_alpha) for _, cell in find_conv_targets(net)]
    params = []
    for i, (cell, layer_rank, layer_alpha) in enumerate(layers):
        if _is_adapted(cell):
            continue
        hit = rank_pattern.lookup(layer_name(cell)) if rank_pattern is not None else None
        if hit is not None:
            layer_rank = hit[0] or layer_rank
            layer_alpha = layer_alpha if hit[1] is None else hit[1]
        layer_alpha = float(layer_alpha) if layer_alpha else float(layer_rank)
        params += _attach(cell, int(layer_rank), layer_alpha, scale, seed=seed + i, dora=dora)
    return params


def lora_param_count(net, rank, targets=None, text_encoder=False):
    """The LoRA formula: sum over target layers of rank * (in_features + out_features)."""
    targets = targets or (TEXT_TARGETS if text_encoder else UNET_TARGETS)
    return sum(rank * (c.weight.shape[0] + c.weight.shape[1]) for _, c in find_targets(net, targets))


def lora_layers(model):
    return [cell for _, cell in model.cells_and_names() if _is_adapted(cell)]


def lora_parameters(model):
    params = []
    for cell in lora_layers(model):
        params += [cell.lora_down, cell.lora_up] + ([cell.lora_magnitude] if cell.lora_dora else [])
    return params


def save_lora(model, path):
    """Write only the LoRA parameters of ``model`` (plus alpha) to ``path``, atomically: one
    ``lora_meta.alpha`` (the most common alpha, the first layer's on a tie) and ``<layer>.alpha`` for
    each layer whose alpha differs (a rank pattern, conv_alpha); DoRA's magnitudes as
    ``<layer>.lora_magnitude_vector``."""
    from ldm.io.ms_checkpoint import atomic_save
    layers = lora_layers(model)
    if not layers:
        raise CheckpointError("save_lora: the model has no LoRA layers")
    entries = [{"name": p.name, "data": p} for p in lora_parameters(model)]
    alphas = [cell.lora_alpha for cell in layers]
    alpha = max(alphas, key=alphas.count)
    entries.append({"name": ALPHA_KEY, "data": Tensor(np.float32(alpha))})
    for cell in layers:
        if cell.lora_alpha != alpha:
            entries.append({"name": _weight_prefix(cell) + MODULE_ALPHA, "data": Tensor(np.float32(cell.lora_alpha))})
    return atomic_save(entries, path)


def load_lora(model, path, scale=1.0, prefixes=None):
    """Inject (if needed) and load a LoRA file into ``model``; ``scale`` multiplies alpha/rank.

    The file is ours (MindONE names, one alpha, per-layer ``<layer>.alpha`` and ranks, DoRA magnitudes),
    or kohya-ss or diffusers/peft (.safetensors), whose module names and per-module alphas
    :mod:`ldm.convert.lora_formats` converts to ours (each alpha/rank folded into up, zero-padded to one
    rank, so that save_lora's single alpha holds). Linear adapters become adapters here; conv LoRA (ours,
    kohya LoCon, peft on Conv2d, SD 1.x's 1x1 proj_in/out) is merged into the conv weight,
    W += scale * alpha/rank * up @ down, and DoRA layers (linear or conv) into theirs,
    W += scale * (m * V / ||V|| - W) with V = W + alpha/rank * up @ down (scale interpolates between
    the base and the DoRA weight, as A1111 and ComfyUI apply a DoRA's strength); merged weights are
    taken out again when a later load_lora (another scale or file) replaces them.
    Every adapter in the file must find its layer (by the layer's weight name), else CheckpointError.
    ``prefixes``: load only the adapters whose names start with one of them (e.g. ``UNET_PREFIX``,
    as MindONE's --lora_ft_unet / --lora_ft_text_encoder choose); None loads all.
    """
    from ldm.convert import lora_formats
    lora = lora_formats.read_lora(path)
    magnitudes = {}
    if lora.layout == "mindone":
        entries = lora_formats.mindone_entries(lora.arrays, path)
        magnitudes = lora_formats.mindone_magnitudes(lora.arrays, path)
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
    _unmerge(model)
    for prefix, (down, up, alpha) in entries.items():
        cell = cells[prefix]
        magnitude = magnitudes.get(prefix)
        if len(cell.weight.shape) == 4 or magnitude is not None:
            _detach(cell)           # the merged weight replaces live adapters of this layer
            _merge_delta(model, cell.weight, _file_delta(cell.weight, down, up, alpha, magnitude, scale, path))
            continue
        down, up = _as_linear(down), _as_linear(up)
        if (down is None or up is None or up.shape != (cell.weight.shape[0], down.shape[0])
                or down.shape[1] != cell.weight.shape[1]):
            raise CheckpointError(f"{path}: LoRA weights for {prefix}weight do not fit its shape {cell.weight.shape}"
                                  f"{OTHER_BASE}")
        rank = down.shape[0]
        if not _is_adapted(cell) or cell.lora_down.shape != down.shape or cell.lora_dora:
            _detach(cell)           # another rank or kind: new adapters
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


def adapted_weight(weight, down, up, factor, magnitude=None):
    """What an adapter makes of ``weight`` (float64 numpy): V = W + factor * up @ down (for a conv the
    kernel of up(down(x)); 4-D or flat downs/ups alike), and with DoRA's ``magnitude`` m * V / ||V||
    per output row."""
    weight = np.asarray(weight, np.float64)
    rank = down.shape[0]
    up2 = np.asarray(up, np.float64).reshape(up.shape[0], -1)
    down2 = np.asarray(down, np.float64).reshape(rank, -1)
    v = weight + factor * (up2 @ down2).reshape(weight.shape)
    if magnitude is None:
        return v
    norm = np.sqrt((v * v).sum(axis=tuple(range(1, v.ndim))))
    scale = np.asarray(magnitude, np.float64).reshape(-1) / np.maximum(norm, DORA_EPS)
    return v * scale.reshape((-1,) + (1,) * (v.ndim - 1))


def _file_delta(weight, down, up, alpha, magnitude, scale, path):
    """The change a file's adapter makes to ``weight`` at user ``scale`` (float64; checked shapes)."""
    rank = down.shape[0]
    out_dim, size = weight.shape[0], int(np.prod(weight.shape))
    if up.shape[0] != out_dim or int(np.prod(up.shape)) != out_dim * rank or int(np.prod(down.shape)) * out_dim \
            != size * rank:
        raise CheckpointError(f"{path}: LoRA weights for {weight.name} do not fit its shape {weight.shape}"
                              f"{OTHER_BASE}")
    if magnitude is not None and np.asarray(magnitude).shape != (out_dim,):
        raise CheckpointError(f"{path}: DoRA magnitude of {weight.name} has shape {np.asarray(magnitude).shape}, "
                              f"the layer has {out_dim} output rows")
    factor = float(alpha) / rank
    if magnitude is None:
        up2 = np.asarray(up, np.float64).reshape(out_dim, rank)
        return (float(scale) * factor * (up2 @ np.asarray(down, np.float64).reshape(rank, -1))).reshape(weight.shape)
    base = weight.asnumpy().astype(np.float64)
    return float(scale) * (adapted_weight(base, down, up, factor, magnitude) - base)


def _merge_delta(model, weight, delta):
    dtype = ms.dtype_to_nptype(weight.dtype)
    weight.set_data(Tensor((weight.asnumpy().astype(np.float64) + delta).astype(dtype)))
    model.__dict__.setdefault(_MERGED, {})[weight.name] = (weight, delta)


def _unmerge(model):
    """Take out conv LoRA and DoRA merged by an earlier load_lora, so loads replace rather than add up."""
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
    """Fold every adapter into its base weight (W += scale * up @ down; DoRA: W = m * V / ||V||) and
    remove the adapters, leaving a plain model with the original parameter names. Returns the number
    of merged layers."""
    layers = lora_layers(model)
    for cell in layers:
        magnitude = cell.lora_magnitude.asnumpy() if cell.lora_dora else None
        merged = adapted_weight(cell.weight.asnumpy(), cell.lora_down.asnumpy(), cell.lora_up.asnumpy(),
                                cell.lora_scale, magnitude)
        cell.weight.set_data(Tensor(merged.astype(ms.dtype_to_nptype(cell.weight.dtype))))
        _detach(cell)
    return len(layers)


def lora_file_fraction(lora_path, base_num_params):
    """Size of a LoRA file relative to fp32 base weights (bytes / (4 * params))."""
    import os
    return os.path.getsize(lora_path) / (4.0 * base_num_params) if base_num_params else math.inf
