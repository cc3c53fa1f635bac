"""Checkpoint files of a training run, always written atomically (temp file in the same folder, then
``os.replace``), so a run killed at any moment leaves either the old or the new file, never half.

Layout under ``{output_path}/ckpt/``:

- ``sd-{N}.ckpt``: the model's parameters with MindONE names (N = epoch, or step with step_mode);
  with EMA on, the EMA weights are stored under the main names (what inference should load).
  With LoRA, ``sd-{N}_lora.ckpt`` instead: only the LoRA parameters (see ldm.train.lora).
- ``train_resume.ckpt``: raw trained weights, optimizer state (``adam_m.*``, ``adam_v.*``,
  ``optimizer_step``), EMA state (``ema.*``, ``ema_num_updates``), loss-scale state
  (``loss_scale``, ``loss_scale_counter``), ``global_step`` and ``epoch``.
"""
import glob
import os
import re

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ldm.errors import CheckpointError

CKPT_DIR = "ckpt"
RESUME_NAME = "train_resume.ckpt"
META_KEYS = ("global_step", "epoch", "seed", "world_size")


def atomic_save(params, path, append_dict=None):
    """``params``: a Cell, or a list of Parameters / ``{"name", "data"}`` dicts. Returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.ckpt")
    if isinstance(params, (list, tuple)):
        params = [p if isinstance(p, dict) else {"name": p.name, "data": p} for p in params]
    try:
        ms.save_checkpoint(params, tmp, append_dict=append_dict)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path):
    """A MindSpore .ckpt -> dict name -> numpy array."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        loaded = ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    return {k: v.asnumpy() for k, v in loaded.items()}


def assign_arrays(params, arrays, path, strict=True):
    """Copy ``arrays[p.name]`` into each Parameter; missing/shape-mismatched names -> CheckpointError."""
    missing, mismatched = [], []
    for p in params:
        if p.name not in arrays:
            missing.append(p.name)
            continue
        value = arrays[p.name]
        if tuple(value.shape) != tuple(p.shape):
            mismatched.append(f"{p.name} {tuple(value.shape)} vs {tuple(p.shape)}")
            continue
        p.set_data(Tensor(value.astype(ms.dtype_to_nptype(p.dtype))))
    if strict and (missing or mismatched):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)} (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointError(f"{path} does not fit this run: {'; '.join(parts)}")


class CheckpointManager:
    """Saves ``sd-{tag}.ckpt`` files, keeps the last ``max_keep``, and the resume file."""

    def __init__(self, output_path, max_keep=10):
        self.folder = os.path.join(output_path, CKPT_DIR)
        self.max_keep = int(max_keep)
        os.makedirs(self.folder, exist_ok=True)

    @property
    def resume_path(self):
        return os.path.join(self.folder, RESUME_NAME)

    def model_path(self, tag, lora=False):
        return os.path.join(self.folder, f"sd-{tag}{'_lora' if lora else ''}.ckpt")

    def save_model(self, params, tag, lora=False):
        path = atomic_save(params, self.model_path(tag, lora))
        self._prune(lora)
        return path

    def _prune(self, lora):
        if self.max_keep <= 0:
            return
        pattern = re.compile(r"sd-(\d+)" + ("_lora" if lora else "") + r"\.ckpt$")
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
