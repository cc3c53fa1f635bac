"""Training: train step, EMA, LR schedules, LoRA, checkpoint save/resume."""
