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
    notes: list = dataclasses.field(default_factory=list)   # (level, message): logged once loading worked

    def log_notes(self):
        for level, message in self.notes:
            logger.log(level, "%s", message)


def resolve_lora(path, use_lora=None, rank=None, ft_unet=True, ft_text_encoder=False):
    """A LoraChoice from the flags; UserError (one line) for a missing/empty file or an empty selection.
    Its warnings are kept in ``notes``, for the caller to log after the file has loaded: a refusal
    that comes later (adapters of another model) must be the only line."""
    from ldm.models.lora import TEXT_PREFIX, UNET_PREFIX, lora_file_summary
    if use_lora is None:
        use_lora = path is not None
    if not use_lora:
        notes = [(logging.WARNING, f"--use_lora False: --lora_ckpt_path {path} is not applied (as MindONE)")]
        return LoraChoice(notes=notes if path else [])
    if not path:
        return LoraChoice(notes=[(logging.INFO, "--use_lora True without --lora_ckpt_path: the checkpoint is "
                                                "taken to hold the LoRA-merged weights (as MindONE)")])
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
    notes = []
    for name, (on, _, flag) in parts.items():
        if on and not summary[name]:
            notes.append((logging.WARNING, f"{flag} True but {path} holds no {name} adapters"))
        if not on and summary[name]:
            notes.append((logging.WARNING, f"{path}: {summary[name]} {name} adapter(s) not loaded ({flag} is "
                                           "False, as MindONE)"))
    file_rank = summary["rank"] or summary["recorded_rank"]
    if rank is not None and file_rank is not None and int(rank) != file_rank:
        notes.append((logging.WARNING, f"--lora_rank {rank} ignored: the adapters in {path} have rank "
                                       f"{file_rank} (MindONE also takes the file's rank)"))
    return LoraChoice(path=path, prefixes=tuple(parts[name][1] for name in chosen), rank=file_rank or rank,
                      notes=notes)
