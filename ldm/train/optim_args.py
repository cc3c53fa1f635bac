"""Optimiser options without MindSpore: kohya-ss's ``optimizer_args``, ``optimizer_type``, the per-group
learning rates (``unet_lr``, ``text_encoder_lr``) and the size of each optimiser's state.

Everything here is checked when the recipe is read (one UserError line, before a model is built), and
the optimiser Cells (ldm.train.optim, optim_extra, adafactor, prodigy) take their keyword arguments from
:func:`optimizer_settings` and their state shapes from :func:`state_shapes`, so the size the log and
bench/optimizer_state.py report is the size the run allocates (tests/test_optimizers.py checks both).

``optimizer_args`` is kohya-ss's: ``key=value`` items whose values are Python literals
(``betas=0.9,0.99``, ``d_coef=2``, ``use_bias_correction=True``, ``beta1=None``), or a YAML mapping. The
recipe's ``betas``, ``adam_eps`` and ``weight_decay`` apply to every optimiser that has them; an
``optimizer_args`` key of the same name wins (kohya-ss passes them there).
"""
import ast
import math
import re

from ldm.errors import UserError

# ---------------------------------------------------------------- value domains
FLOAT32_MAX = 3.4028234663852886e38


def _number(value, allow_inf=False):
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not allow_inf) or (math.isfinite(number)
                                                                        and abs(number) > FLOAT32_MAX):
        raise ValueError("not a finite float32 number")
    return number


def _flag(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError("True or False")


def _pair(value):
    items = list(value) if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
    if len(items) != 2:
        raise ValueError("two numbers")
    return [_number(v) for v in items]


def _optional(convert):
    def conv(value):
        return None if value is None or str(value).strip().lower() in ("none", "null") else convert(value)
    return conv


def _whole(value):
    number = _number(value)
    if not number.is_integer():
        raise ValueError("a whole number")
    return int(number)


def _in_01(v):
    return v is None or 0 <= v < 1


# key -> (converter, test, what the value must be)
_KEYS = {
    "betas": (_pair, lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "eps": (_number, lambda v: v > 0, "> 0"),
    "weight_decay": (_number, lambda v: v >= 0, ">= 0"),
    "momentum": (_number, _in_01, "in [0, 1)"),
    # Adafactor (transformers' names): eps is the pair (regulariser of g^2, floor of the parameter scale)
    "adafactor.eps": (_pair, lambda v: all(e > 0 for e in v), "two numbers > 0 (eps1, eps2)"),
    "clip_threshold": (_number, lambda v: v > 0, "> 0"),
    "decay_rate": (_number, lambda v: v <= 0, "<= 0 (beta2 at step t is 1 - t^decay_rate)"),
    "beta1": (_optional(_number), _in_01, "None or in [0, 1)"),
    "scale_parameter": (_flag, lambda v: True, "True or False"),
    "relative_step": (_flag, lambda v: True, "True or False"),
    "warmup_init": (_flag, lambda v: True, "True or False"),
    # Prodigy (prodigyopt's names)
    "beta3": (_optional(_number), _in_01, "None (= sqrt(beta2)) or in [0, 1)"),
    "decouple": (_flag, lambda v: True, "True or False"),
    "use_bias_correction": (_flag, lambda v: True, "True or False"),
    "safeguard_warmup": (_flag, lambda v: True, "True or False"),
    "d0": (_number, lambda v: v > 0, "> 0"),
    "d_coef": (_number, lambda v: v > 0, "> 0"),
    "growth_rate": (lambda v: _number(v, allow_inf=True), lambda v: v >= 1, ">= 1 (inf = unbounded)"),
    "slice_p": (_whole, lambda v: v >= 1, "a whole number >= 1"),
}

# optimiser -> its keyword arguments and their defaults (None for betas/eps/weight_decay: the recipe's
# top-level betas / adam_eps / weight_decay). Defaults are the reference implementations': torch AdamW,
# lion-pytorch's Lion, the LAMB paper, transformers' Adafactor, prodigyopt's Prodigy.
DEFAULTS = {
    "adamw": dict(betas=None, eps=None, weight_decay=None),
    "adam": dict(betas=None, eps=None, weight_decay=None),
    "momentum": dict(momentum=None, weight_decay=None),
    "sgd": dict(weight_decay=None),
    "lion": dict(betas=None, weight_decay=None),
    "lamb": dict(betas=None, eps=None, weight_decay=None),
    "adafactor": dict(eps=[1e-30, 1e-3], clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=None,
                      scale_parameter=True, relative_step=True, warmup_init=False),
    "prodigy": dict(betas=None, beta3=None, eps=None, weight_decay=None, decouple=True, use_bias_correction=False,
                    safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=math.inf, slice_p=1),
}
OPTIMIZERS = tuple(DEFAULTS)


# ---------------------------------------------------------------- parsing
_ITEM_START = re.compile(r"\s+(?=[A-Za-z_]\w*\s*=)")


def _literal(text):
    text = text.strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text                     # inf, a bare word: the key's converter decides
    return list(value) if isinstance(value, tuple) else value


def parse_optimizer_args(value):
    """kohya-ss's ``optimizer_args`` as a dict: a YAML mapping, a list of ``key=value`` strings, or one string
    of them separated by spaces (``"d_coef=2 use_bias_correction=True"``). Values are Python literals
    (tuples become lists, so args.yaml can hold them); anything else stays a string for the key's check."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in value.items()}
    items = value if isinstance(value, (list, tuple)) else [value]
    out = {}
    for item in items:
        for part in _ITEM_START.split(str(item).strip()):
            if not part:
                continue
            key, sep, text = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{part!r} is not key=value")
            out[key.strip()] = _literal(text)
    return out


def optimizer_type_name(value):
    """kohya-ss's ``optimizer_type`` (AdamW, Lion, Prodigy, AdaFactor, ...; its names of ours, compared
    case-insensitively): '' or one of :data:`OPTIMIZERS`. Its 8-bit, paged, DAdaptation and class-path
    optimisers have no counterpart here."""
    name = str(value or "").strip().lower()
    if name and name not in DEFAULTS:
        raise ValueError("not supported here; choose one of AdamW, AdaFactor, Lion, Prodigy, SGD, Adam, Lamb, "
                         "Momentum")
    return name


# ---------------------------------------------------------------- settings
def optimizer_settings(name, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, options=None):
    """Keyword arguments of optimiser ``name``'s Cell: its defaults, the recipe's betas/eps/weight_decay where
    it takes them, then ``options`` (parsed optimizer_args), each checked. Raises UserError (one line)."""
    if name not in DEFAULTS:
        raise UserError(f"unknown optim {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    top = dict(betas=[float(b) for b in betas], eps=float(eps), weight_decay=float(weight_decay),
               momentum=float(betas[0]))
    settings = {key: (top[key] if default is None and key in top else default)
                for key, default in DEFAULTS[name].items()}
    options = parse_optimizer_args(options) if not isinstance(options, dict) else options
    unknown = sorted(k for k in options if k not in settings)
    if unknown:
        raise UserError(f"optimizer_args: {', '.join(unknown)} not accepted by {name}; its keys: "
                        f"{', '.join(settings) or 'none'}")
    for key, value in options.items():
        convert, ok, what = _KEYS.get(f"{name}.{key}", _KEYS[key])
        try:
            value = convert(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"optimizer_args: {key} of {name} must be {what}, got {value!r} ({exc})") from None
        if not ok(value):
            raise UserError(f"optimizer_args: {key} of {name} must be {what}, got {value!r}")
        settings[key] = value
    if name == "adafactor" and settings["warmup_init"] and not settings["relative_step"]:
        raise UserError("optimizer_args: adafactor's warmup_init=True needs relative_step=True (as transformers)")
    return settings


def resolve_optimizer(cfg):
    """In place, before anything is built: kohya-ss's ``optimizer_type`` (when set) names ``optim``, and
    ``optimizer_args`` must fit that optimiser (unknown key: one line listing its keys)."""
    if getattr(cfg, "optimizer_type", ""):
        cfg.optim = cfg.optimizer_type
    optimizer_settings(cfg.optim, cfg.betas, cfg.adam_eps, cfg.weight_decay, getattr(cfg, "optimizer_args", {}))


def describe(settings):
    """One line of an optimiser's settings, for the log."""
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in settings.items())


def notices(name, settings, cfg, trains_text_encoder):
    """Lines worth one log warning each: settings that kohya-ss also ignores or warns about."""
    lines = []
    if name == "adafactor" and settings["relative_step"]:
        lines.append("adafactor relative_step=True: the step size comes from the algorithm (min(1e-2, 1/sqrt(t)) "
                     "x parameter RMS); start_learning_rate, the scheduler, unet_lr and text_encoder_lr do not "
                     "apply (as kohya-ss); set optimizer_args relative_step=False to use them")
    if name == "prodigy" and cfg.start_learning_rate < 0.1:
        lines.append(f"prodigy estimates the step size itself: start_learning_rate ({cfg.start_learning_rate:g}) "
                     "is a multiplier of it, usually 1.0 (kohya-ss warns below 0.1)")
    if getattr(cfg, "text_encoder_lr", 0.0) and not trains_text_encoder:
        lines.append("text_encoder_lr is set but no text-encoder parameter trains (train_text_encoder / "
                     "lora_ft_text_encoder): it has no effect")
    return lines


# ---------------------------------------------------------------- per-group learning rates
def group_lr_scales(params, text_encoder_params, start_lr, unet_lr=0.0, text_encoder_lr=0.0):
    """Per-parameter multipliers of the scheduled learning rate: ``text_encoder_lr / start_lr`` for the
    parameters among ``text_encoder_params`` (full weights or LoRA adapters), ``unet_lr / start_lr`` for the
    rest; an unset (0) group rate is start_lr's (multiplier 1). So each group's rate at step t is
    schedule(t) * group_lr / start_lr: the schedule's shape, the group's peak (kohya-ss's unet_lr and
    text_encoder_lr)."""
    in_text = {id(p) for p in text_encoder_params}
    unet = unet_lr / start_lr if unet_lr else 1.0
    text = text_encoder_lr / start_lr if text_encoder_lr else 1.0
    return [text if id(p) in in_text else unet for p in params]


def scale_tensors(params, lr_scales):
    """The per-parameter lr multipliers as a tuple of float32 scalar Tensors, which the optimisers map with
    their parameters (graph constants); None = 1 for every parameter."""
    import mindspore as ms
    return tuple(ms.Tensor(s, ms.float32) for s in check_lr_scales(params, lr_scales))


def check_lr_scales(params, lr_scales):
    """``lr_scales`` as floats, one per parameter (None: all 1)."""
    if lr_scales is None:
        return [1.0] * len(params)
    scales = [float(s) for s in lr_scales]
    if len(scales) != len(params) or not all(math.isfinite(s) and s >= 0 for s in scales):
        raise ValueError(f"lr_scales: one finite number >= 0 per parameter ({len(params)}), got {len(scales)}")
    return scales


# ---------------------------------------------------------------- state size
def adafactor_shapes(shape):
    """Adafactor's second-moment state of one parameter, as transformers stores it: for >= 2-D, a row and a
    column mean over the last two dimensions (shape[:-1] and shape[:-2] + shape[-1:]); else the full v and
    a (1,) placeholder (so every parameter has the same two entries to map over)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) >= 2:
        return [shape[:-1], shape[:-2] + shape[-1:]]
    return [shape, (1,)]


def sliced_length(shape, slice_p):
    """Length of ``flatten()[::slice_p]`` (Prodigy's p0 and s)."""
    return -(-math.prod(int(d) for d in shape) // int(slice_p))


def state_shapes(name, shape, settings):
    """The shapes of the per-parameter state optimiser ``name`` keeps for a parameter of ``shape``."""
    shape = tuple(int(d) for d in shape)
    if name in ("adamw", "adam", "lamb"):
        return [shape, shape]
    if name in ("momentum", "sgd", "lion"):     # sgd is Momentum(0): it keeps (zero) moments too
        return [shape]
    if name == "adafactor":
        return adafactor_shapes(shape) + ([shape] if settings["beta1"] is not None else [])
    if name == "prodigy":
        n = sliced_length(shape, settings["slice_p"])
        return [shape, shape, (n,), (n,)]
    raise UserError(f"unknown optim {name!r}")


SCALAR_STATE = {"prodigy": 4}       # step, d, d_max, d_numerator; every other optimiser: its step


def state_bytes(name, shapes, settings, itemsize=4):
    """Bytes of optimiser ``name``'s state for parameters of ``shapes`` (fp32 state, 4-byte scalars)."""
    elements = sum(math.prod(s) for shape in shapes for s in state_shapes(name, shape, settings))
    return elements * itemsize + 4 * SCALAR_STATE.get(name, 1)
