"""Checkpoint files of a training run, always written atomically (temp file in the same folder, then
``os.replace``), so a run killed at any moment leaves either the old or the new file, never half.

Layout under ``{output_path}/ckpt/``:

- ``sd-{N}.ckpt``: the model's parameters with MindONE names (N = epoch, or step with step_mode);
  with EMA on, the EMA weights are stored under the main names (what inference should load).
  Each records the run's DiffusionSpec as JSON under ``diffusion_spec`` (ldm.diffusion.spec).
- ``model_config.yaml``: the model YAML stating that spec (prediction type, zero SNR, scale factor).
  With LoRA, ``sd-{N}_lora.ckpt`` instead: only the LoRA parameters (see ldm.models.lora).
- ``train_resume.ckpt``: raw trained weights, optimizer state (``adam_m.*``, ``adam_v.*``,
  ``optimizer_step``), EMA state (``ema.*``, ``ema_num_updates``), loss-scale state
  (``loss_scale``, ``loss_scale_counter``), ``global_step`` and ``epoch``.
"""
import glob
import os
import re

import numpy as np
from mindspore import Tensor

from ldm.io.ms_checkpoint import assign_arrays, atomic_save, read_checkpoint
from ldm.util import write_yaml

CKPT_DIR = "ckpt"
RESUME_NAME = "train_resume.ckpt"
MODEL_CONFIG_NAME = "model_config.yaml"
META_KEYS = ("global_step", "epoch", "seed", "world_size")


def _suffix(lora, suffix):
    return ("_lora" if lora else "") if suffix is None else suffix


def resume_file(output_path):
    """Where a run in ``output_path`` keeps its resume file (known before the folder is created)."""
    return os.path.join(output_path, CKPT_DIR, RESUME_NAME)


class CheckpointManager:
    """Saves ``sd-{tag}.ckpt`` files, keeps the last ``max_keep``, and the resume file."""

    def __init__(self, output_path, max_keep=10):
        self.folder = os.path.join(output_path, CKPT_DIR)
        self.max_keep = int(max_keep)
        os.makedirs(self.folder, exist_ok=True)

    @property
    def resume_path(self):
        return os.path.join(self.folder, RESUME_NAME)

    def model_path(self, tag, lora=False, suffix=None):
        """``sd-{tag}{suffix}.ckpt``; suffix "_lora" with ``lora``, else "" unless a mode gives its own
        ("_controlnet": ldm.train.controlnet)."""
        return os.path.join(self.folder, f"sd-{tag}{_suffix(lora, suffix)}.ckpt")

    def save_model(self, params, tag, lora=False, append_dict=None):
        path = atomic_save(params, self.model_path(tag, lora), append_dict=append_dict)
        self._prune(lora)
        return path

    def save_model_config(self, config):
        """``model_config.yaml`` beside the checkpoints: the model YAML with the spec training used,
        which text_to_image.py picks up when given one of these checkpoints and no --config."""
        return write_yaml(config, os.path.join(self.folder, MODEL_CONFIG_NAME))

    def _prune(self, lora=False, suffix=None):
        if self.max_keep <= 0:
            return
        pattern = re.compile(r"sd-(\d+)" + re.escape(_suffix(lora, suffix)) + r"\.ckpt$")
        found = []
        for path in glob.glob(os.path.join(self.folder, "sd-*.ckpt")):
            m = pattern.search(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        for _, path in sorted(found)[:-self.max_keep]:
            os.remove(path)

    def save_resume(self, params, meta):
        """``params``: every Parameter of the training state; ``meta``: ints named in META_KEYS."""
        extra = {k: Tensor(np.asarray(int(v), dtype=np.int64)) for k, v in meta.items()}
        entries = [{"name": p.name, "data": p} for p in params]
        entries += [{"name": f"meta.{k}", "data": v} for k, v in extra.items()]
        return atomic_save(entries, self.resume_path)


def load_resume(path, params):
    """Load a resume file into ``params`` (strict) and return its meta dict of ints."""
    arrays = read_checkpoint(path)
    assign_arrays(params, arrays, path, strict=True)
    return {k[len("meta."):]: int(v) for k, v in arrays.items() if k.startswith("meta.")}
