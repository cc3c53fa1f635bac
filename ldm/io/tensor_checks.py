"""What a tensor read from a file must be before it is used as a weight: a floating dtype with only finite
values. A NaN LoRA or embedding otherwise loads silently and draws black or garbage images; an integer or
bool tensor would be cast to float and mean nothing. Every refusal names the file and the tensor.

Pure numpy (no MindSpore), so the readers that call it stay importable and fuzzable without MindSpore.
"""
import zlib

import numpy as np

from ldm.errors import CheckpointError

# non-finite values are counted in slices of this many elements (no full-size bool mask of a 3 GB tensor)
_SLICE = 1 << 24


def nonfinite_count(array):
    """How many NaN / inf values ``array`` (a floating array) holds."""
    flat = np.asarray(array).reshape(-1)
    bad = 0
    for start in range(0, flat.size, _SLICE):
        part = flat[start:start + _SLICE]
        bad += int(part.size - np.count_nonzero(np.isfinite(part)))
    return bad


def check_weight(name, array, path, what="weight"):
    """``array`` must be floating and finite; else one CheckpointError naming ``path`` and ``name``."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise CheckpointError(f"{path}: tensor {name} has dtype {array.dtype}, but a {what} must be floating "
                              f"point (float16/bfloat16/float32/float64): not a usable {what} file")
    bad = nonfinite_count(array)
    if bad:
        raise CheckpointError(f"{path}: tensor {name} holds {bad} non-finite value(s) (NaN/inf) of {array.size}: "
                              f"the {what} file is broken (a diverged training run?); it would draw black or "
                              "garbage images")


def check_weights(arrays, path, what="weight", skip=()):
    """:func:`check_weight` for every entry of ``arrays`` whose name is not in ``skip``."""
    for name, array in arrays.items():
        if name not in skip:
            check_weight(name, array, path, what)


def scalar_value(name, array, path, what="alpha"):
    """A finite real scalar held in ``array`` (int or float, one element); bools, strings, NaN/inf or
    several elements are one CheckpointError naming the tensor."""
    array = np.asarray(array)
    if array.dtype.kind not in "iuf" or array.size != 1:
        raise CheckpointError(f"{path}: tensor {name} must be one number ({what}), got dtype {array.dtype} "
                              f"shape {array.shape}")
    value = float(array.reshape(-1)[0])
    if not np.isfinite(value):
        raise CheckpointError(f"{path}: tensor {name} ({what}) is {value}, not a finite number")
    return value


DIGEST_KEY = "msd_content_crc32"       # safetensors __metadata__ entry of the files we write


def content_crc32(arrays):
    """CRC-32 (8 hex digits) of ``arrays`` in name order: each name, dtype, shape and bytes. Written into
    the metadata of the .safetensors files we make and checked when they are read back, so a file
    damaged after it was written is refused (the .ckpt files carry MindSpore's own CRC trailer)."""
    crc = 0
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        head = f"{name}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8")
        crc = zlib.crc32(array.reshape(-1).view(np.uint8), zlib.crc32(head, crc))
    return f"{crc:08x}"


def check_content_crc32(arrays, recorded, path):
    """One CheckpointError if ``arrays`` no longer give the CRC-32 recorded when the file was written."""
    if content_crc32(arrays) != recorded:
        raise CheckpointError(f"{path}: its content no longer matches the CRC-32 recorded when it was written "
                              "(damaged on disk or in a copy): use another copy or write it again")
