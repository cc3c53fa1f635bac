"""Read any supported weight file into a flat ``name -> numpy array`` dict, without torch.

Formats are sniffed from the first bytes, not the file extension:
* MindSpore ``.ckpt`` (protobuf, parsed in pure Python by :mod:`ldm.io.ckpt_proto`);
* PyTorch ``torch.save`` files, zip or legacy (:mod:`ldm.convert.torch_pickle`, restricted unpickler);
* ``.safetensors`` (:mod:`ldm.convert.safetensors_reader`, strict header check, BF16 -> float32).

Every reader validates offsets, shapes and sizes before copying a byte, so a corrupt or hostile file
is one CheckpointError line naming it, never a crash or data read from outside the file. Importing
this module imports neither torch nor MindSpore.
"""
import os
import struct

import numpy as np

from ldm.convert.safetensors_reader import read_safetensors
from ldm.convert.torch_pickle import flatten_state_dict, load_torch_file
from ldm.errors import CheckpointError
from ldm.io.ckpt_proto import read_ckpt

__all__ = ["sniff_format", "read_safetensors", "read_mindspore", "read_weight_file", "write_safetensors"]


def sniff_format(path):
    """'safetensors' | 'torch' | 'mindspore' for a weight file; CheckpointError when unknown."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file too short to be a checkpoint ({len(head)} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 0 < header_len <= os.path.getsize(path) - 8:
        return "safetensors"  # before the pickle test: a header length of 128 mod 256 starts with 0x80
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    # a JSON header after the length; a bad length is the safetensors reader's to report, unless the
    # first byte also fits a MindSpore file (0x0a), where only a length inside the file decides
    if head[8:9] == b"{" and (head[:1] != b"\x0a" or header_len <= os.path.getsize(path) - 8):
        return "safetensors"
    if head[:1] == b"\x0a":  # protobuf field 1 (Checkpoint.value), length-delimited
        return "mindspore"
    raise CheckpointError(f"{path}: unknown checkpoint format (not MindSpore .ckpt, torch or safetensors)")


def read_mindspore(path):
    """A MindSpore .ckpt, parsed in pure Python; append-dict text entries become 0-d str arrays."""
    return {name: np.array(v) if isinstance(v, str) else v for name, v in read_ckpt(path).items()}


def read_weight_file(path):
    """Flat dict of arrays from one file of any supported format."""
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return read_safetensors(path)
    if fmt == "torch":
        return flatten_state_dict(load_torch_file(path), path)
    return read_mindspore(path)


def write_safetensors(state, path, metadata=None):
    """Write ``state`` (name -> array) as .safetensors through the atomic writer (temp file, then
    os.replace; the permissions every other output gets). The safetensors library reports a failed
    write (read-only folder, full disk) as its own SafetensorError: that is one UserError line here."""
    from safetensors.numpy import save_file
    from ldm.errors import UserError
    from ldm.io.atomic import atomic_path
    from ldm.io.tensor_checks import DIGEST_KEY, content_crc32
    try:
        state = {k: np.asarray(v, order="C") for k, v in state.items()}     # C order; 0-d stays 0-d (kohya's alpha)
        metadata = dict(metadata or {}, **{DIGEST_KEY: content_crc32(state)})   # verified when read back
        with atomic_path(path) as tmp:
            save_file(state, tmp, metadata=metadata)
    except OSError:
        raise                                   # one line at the CLIs already (ldm.errors.run_cli)
    except Exception as exc:                    # safetensors_rust.SafetensorError has no importable base
        if type(exc).__name__ != "SafetensorError":
            raise
        raise UserError(f"cannot write {path}: {exc}") from exc
