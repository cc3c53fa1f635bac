"""MindONE's LoRA flags of text_to_image.py (--use_lora, --lora_rank, --lora_ft_unet,
--lora_ft_text_encoder) turned into what ldm.models.lora.load_lora needs, checked before any model is built.

MindONE (text_to_image.py, read 2026-12-01) loads LoRA only with ``--use_lora True``; without a
--lora_ckpt_path the checkpoint itself is taken as already holding the fine-tuned weights. The rank
comes from the file's ``lora_rank`` entry when present (the flag is then ignored); the adapters
injected, and so loaded, are the UNet's (--lora_ft_unet, default True) and/or the text encoder's
(--lora_ft_text_encoder, default False). Here the adapters' shapes give the rank, and --use_lora
defaults to "on when --lora_ckpt_path is given" (our earlier behaviour; MindONE's default False
would silently drop a LoRA file that is named on the command line).
"""
import dataclasses
import logging
import os

from ldm.errors import UserError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoraChoice:
    path: str = None                  # None: no LoRA is applied
    prefixes: tuple = None            # name prefixes of the adapters to load
    rank: int = None


def resolve_lora(path, use_lora=None, rank=None, ft_unet=True, ft_text_encoder=False):
    """A LoraChoice from the flags; UserError (one line) for a missing/empty file or an empty selection."""
    from ldm.models.lora import TEXT_PREFIX, UNET_PREFIX, lora_file_summary
    if use_lora is None:
        use_lora = path is not None
    if not use_lora:
        if path:
            logger.warning("--use_lora False: --lora_ckpt_path %s is not applied (as MindONE)", path)
        return LoraChoice()
    if not path:
        logger.info("--use_lora True without --lora_ckpt_path: the checkpoint is taken to hold the LoRA-merged "
                    "weights (as MindONE)")
        return LoraChoice()
    if not os.path.isfile(path):
        raise UserError(f"LoRA checkpoint not found: {path}")
    if not (ft_unet or ft_text_encoder):
        raise UserError("--lora_ft_unet False and --lora_ft_text_encoder False select no LoRA adapters to load")
    summary = lora_file_summary(path)         # CheckpointError (one line) if it is no checkpoint
    parts = {"unet": (ft_unet, UNET_PREFIX, "--lora_ft_unet"),
             "text_encoder": (ft_text_encoder, TEXT_PREFIX, "--lora_ft_text_encoder")}
    chosen = [name for name, (on, _, _) in parts.items() if on]
    if not any(summary[name] for name in chosen):
        held = [name for name in parts if summary[name]] or ["no adapters"]
        raise UserError(f"LoRA checkpoint {path} holds no {' or '.join(chosen)} adapters (it holds: "
                        f"{', '.join(held)}); set --lora_ft_unet / --lora_ft_text_encoder to match")
    for name, (on, _, flag) in parts.items():
        if on and not summary[name]:
            logger.warning("%s True but %s holds no %s adapters", flag, path, name)
        if not on and summary[name]:
            logger.warning("%s: %d %s adapter(s) not loaded (%s is False, as MindONE)", path, summary[name],
                           name, flag)
    file_rank = summary["rank"] or summary["recorded_rank"]
    if rank is not None and file_rank is not None and int(rank) != file_rank:
        logger.warning("--lora_rank %d ignored: the adapters in %s have rank %d (MindONE also takes the "
                       "file's rank)", rank, path, file_rank)
    return LoraChoice(path=path, prefixes=tuple(parts[name][1] for name in chosen), rank=file_rank or rank)
