"""Learning-rate schedules as plain per-step arrays (float32), so resume just indexes by step.

Linear warm-up from 0 to ``start_lr`` over ``warmup_steps``, then constant, cosine or polynomial
(power 1) decay from ``start_lr`` to ``end_lr`` over ``decay_steps`` and ``end_lr`` after that
(MindONE's scheduler names). ``cosine_with_restarts`` (kohya-ss's, transformers'
``get_cosine_with_hard_restarts_schedule_with_warmup``) runs ``num_cycles`` cosine decays over the same span,
each from ``start_lr`` down to ``end_lr`` and jumping back up: factor 0.5 (1 + cos(pi ((num_cycles * progress)
mod 1))). transformers decays to 0, which is ``end_lr`` 0 (the default); its warm-up starts at 0 at step 0,
ours at start_lr / warmup_steps (the same warm-up as the other schedules here).
"""
import math

import numpy as np

from ldm.errors import UserError

SCHEDULERS = ("constant", "cosine_decay", "polynomial_decay", "cosine_with_restarts")


def build_lr_schedule(name, start_lr, end_lr, total_steps, warmup_steps=0, decay_steps=0, power=1.0, num_cycles=1):
    """Return ``np.ndarray`` (total_steps,) float32: the learning rate used at each optimiser step."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    total_steps = max(int(total_steps), 1)
    warmup_steps = max(int(warmup_steps), 0)
    decay_steps = int(decay_steps) if decay_steps and decay_steps > 0 else max(total_steps - warmup_steps, 1)
    lrs = np.empty(total_steps, dtype=np.float64)
    for step in range(total_steps):
        if step < warmup_steps:
            lrs[step] = start_lr * (step + 1) / warmup_steps
            continue
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        if name == "constant":
            lrs[step] = start_lr
        elif name == "cosine_decay":
            lrs[step] = end_lr + 0.5 * (start_lr - end_lr) * (1.0 + math.cos(math.pi * progress))
        elif name == "cosine_with_restarts":    # progress 1 (decay_steps done) is end_lr: transformers' 0
            phase = (num_cycles * progress) % 1.0 if progress < 1.0 else 1.0
            lrs[step] = end_lr + 0.5 * (start_lr - end_lr) * (1.0 + math.cos(math.pi * phase))
        else:
            lrs[step] = end_lr + (start_lr - end_lr) * (1.0 - progress) ** power
    return lrs.astype(np.float32)
