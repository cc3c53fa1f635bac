"""The adapter options of a LoRA run beyond rank and alpha: kohya-ss's LoCon ``conv_dim`` / ``conv_alpha``
(LoRA on the UNet's 3x3 convs), ``use_dora`` (weight-decomposed LoRA, as peft) and ``lora_rank_pattern``
(per-layer rank / alpha, as peft's rank_pattern / alpha_pattern), checked before anything is built and
applied by :func:`inject_adapters` (the LoRA branch of ldm.train.loop.select_trainable).

A rank-pattern file is a YAML mapping, read strictly (ldm.util.safe_load_yaml: duplicate keys, bad
syntax, non-UTF-8 bytes are one line): each key a regular expression matched, as peft does, against
whole dotted suffixes of our layer names (the weight name without ``.weight``, e.g.
``model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q``); each value a rank
(``to_k: 8``) or a mapping with ``rank`` and/or ``alpha`` (``attn2\\.to_v: {rank: 16, alpha: 8}``). The
first key that matches a layer decides. A key that matches no adapted layer stops the run (one line).
"""
import logging
import math
import os

from ldm.errors import UserError
from ldm.models import lora as lora_lib

_log = logging.getLogger("ldm.train")
OPTION = "lora_rank_pattern"


def _rank(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: rank must be an integer >= 1, got {value!r}")
    return value


def _alpha(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"{where}: alpha must be a finite number >= 0 (0 = the rank), got {value!r}")
    return float(value)


def read_rank_pattern(path):
    """The :class:`ldm.models.lora.RankPattern` of a YAML file; every mistake is one UserError line."""
    from ldm.util import safe_load_yaml
    if not os.path.isfile(path):
        raise UserError(f"{OPTION} {'is not a file' if os.path.exists(path) else 'not found'}: {path}")
    raw = safe_load_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{OPTION} {path} must hold a non-empty mapping of layer-name patterns to a rank or "
                        f"{{rank, alpha}}, got {type(raw).__name__ if raw is not None else 'nothing'}")
    rules = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise UserError(f"{OPTION} {path}: key {key!r} is not a pattern (a quoted regular expression)")
        where = f"{OPTION} {path} key {key!r}"
        if isinstance(value, dict):
            extra = sorted(set(map(str, value)) - {"rank", "alpha"})
            if extra or not value:
                raise UserError(f"{where}: a mapping value takes rank and/or alpha, got "
                                f"{', '.join(extra) if extra else 'nothing'}")
            rank = _rank(value["rank"], where) if "rank" in value else None
            alpha = _alpha(value["alpha"], where) if "alpha" in value else None
        else:
            rank, alpha = _rank(value, where), None
        rules.append((key, rank, alpha))
    return lora_lib.RankPattern(rules, source=f"{OPTION} {path}")


def check_adapter_options(cfg):
    """What can be checked before a model exists (config.validate calls it; DreamBooth's too)."""
    conv_dim, conv_alpha = getattr(cfg, "conv_dim", 0), getattr(cfg, "conv_alpha", 0.0)
    use_dora, pattern = getattr(cfg, "use_dora", False), getattr(cfg, OPTION, "")
    set_flags = [name for name, on in (("conv_dim", conv_dim), ("conv_alpha", conv_alpha), ("use_dora", use_dora),
                                       (OPTION, pattern)) if on]
    if set_flags and not cfg.use_lora:
        raise UserError(f"{', '.join(set_flags)} need{'s' if len(set_flags) == 1 else ''} use_lora True "
                        "(LoRA adapter options)")
    if conv_alpha and not conv_dim:
        raise UserError("conv_alpha needs conv_dim >= 1 (the conv LoRA rank; 0 = no conv LoRA)")
    if conv_dim and not cfg.lora_ft_unet:
        raise UserError("conv_dim needs lora_ft_unet True (conv LoRA adapts the UNet's ResBlock and "
                        "down/upsampling convs)")
    if pattern:
        read_rank_pattern(pattern)


def inject_adapters(cfg, model, nets):
    """Inject the run's adapters into ``nets`` (the UNet and/or the text encoder of ``model``); returns
    the new Parameters. A rank-pattern key that matched no layer of any of them is one UserError."""
    pattern = read_rank_pattern(cfg.lora_rank_pattern) if getattr(cfg, OPTION, "") else None
    text_encoder = getattr(model, "cond_stage_model", None)
    conv_dim, use_dora = getattr(cfg, "conv_dim", 0), bool(getattr(cfg, "use_dora", False))
    params = []
    for net in nets:
        is_text = net is text_encoder
        params += lora_lib.inject_lora(net, rank=cfg.lora_rank, alpha=cfg.lora_alpha or None, text_encoder=is_text,
                                       scale=cfg.lora_scale, conv_rank=0 if is_text else conv_dim,
                                       conv_alpha=getattr(cfg, "conv_alpha", 0.0) or None, dora=use_dora,
                                       rank_pattern=pattern)
    layers = [cell for net in nets for cell in lora_lib.lora_layers(net)]
    if pattern is not None:
        pattern.check_used(example=lora_lib.layer_name(layers[0]) if layers else None)
    if conv_dim or use_dora or pattern is not None:
        convs = sum(len(cell.weight.shape) == 4 for cell in layers)
        ranks = sorted({cell.lora_rank for cell in layers})
        _log.info("LoRA: %d layers (%d conv), ranks %s%s", len(layers), convs, ", ".join(map(str, ranks)),
                  ", DoRA" if use_dora else "")
    return params
