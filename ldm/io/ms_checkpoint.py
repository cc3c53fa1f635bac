"""MindSpore ``.ckpt`` files written atomically (temp file in the same folder, then ``os.replace``), read
back as numpy (by the pure-Python parser :mod:`ldm.io.ckpt_proto`), and copied into Parameters. Below
both training and the pipeline: LoRA files, training checkpoints and resume files all go through here.
"""
import os

import mindspore as ms
from mindspore import Tensor

from ldm.errors import CheckpointError
from ldm.io.atomic import atomic_path
from ldm.io.ckpt_proto import read_ckpt
from ldm.io.tensor_checks import check_weight


def atomic_save(params, path, append_dict=None):
    """``params``: a Cell, or a list of Parameters / ``{"name", "data"}`` dicts. Returns ``path``."""
    if isinstance(params, (list, tuple)):
        params = [p if isinstance(p, dict) else {"name": p.name, "data": p} for p in params]
    # MindSpore itself writes "<tmp minus .ckpt>.tmp" first and renames it: remove that too on failure.
    # crc_check appends a CRC-32 of the file, which every read verifies (ldm.io.ckpt_proto): a file
    # damaged after it was written is refused instead of resumed from; MindSpore's own loader skips it.
    with atomic_path(path, leftovers=lambda tmp: [os.path.splitext(tmp)[0] + ".tmp"]) as tmp:
        ms.save_checkpoint(params, tmp, append_dict=append_dict, crc_check=True)
    return path


def read_checkpoint(path):
    """A MindSpore .ckpt -> dict name -> numpy array (text entries of the append dict left out).

    Parsed in pure Python with strict bounds (:mod:`ldm.io.ckpt_proto`), not by
    ``mindspore.load_checkpoint``, whose C++ side can crash on a corrupt file: a bad file is one
    CheckpointError line.
    """
    return {k: v for k, v in read_ckpt(path).items() if not isinstance(v, str)}


def assign_arrays(params, arrays, path, strict=True):
    """Copy ``arrays[p.name]`` into each Parameter; missing/shape-mismatched names, or a non-float or
    non-finite value for a float Parameter -> CheckpointError."""
    missing, mismatched = [], []
    for p in params:
        if p.name not in arrays:
            missing.append(p.name)
            continue
        value = arrays[p.name]
        if tuple(value.shape) != tuple(p.shape):
            mismatched.append(f"{p.name} {tuple(value.shape)} vs {tuple(p.shape)}")
            continue
        if str(p.dtype).lower().startswith(("float", "bfloat")):
            check_weight(p.name, value, path, "state")
        p.set_data(Tensor(value, dtype=p.dtype))
    if strict and (missing or mismatched):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if mismatched:
            parts.append(f"shape mismatch {len(mismatched)} (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointError(f"{path} does not fit this run: {'; '.join(parts)}")
