"""Copy tensors out of raw little-endian bytes whose ranges the caller has already validated.

Every weight reader (torch, safetensors, MindSpore .ckpt) checks offsets, shapes and sizes with
Python ints first; this module only turns a checked byte range into a fresh, writable, native-order
numpy array. ``numpy.frombuffer`` re-checks the range (ValueError if it would leave the buffer), so a
validation bug cannot turn into a read outside the file. No torch, no MindSpore.
"""
import numpy as np

BF16 = "bf16"  # numpy has no bfloat16: read as uint16 and widen to float32
BOOL = "bool"  # stored as one byte; any non-zero byte reads as True

_NUMPY = {BF16: np.dtype("<u2"), BOOL: np.dtype("u1")}
MAX_DIMS = 32  # numpy's limit (1.26)
MAX_INT = (1 << 63) - 1  # largest offset/size/stride any of the formats can express


def element_size(kind):
    """Bytes per element of ``kind`` (a numpy dtype string such as ``'<f4'``, or BF16 / BOOL)."""
    return raw_dtype(kind).itemsize


def raw_dtype(kind):
    return _NUMPY.get(kind) or np.dtype(kind)


def is_count(value):
    """A plain non-negative Python int that fits int64 (no bool, no numpy scalar, no float)."""
    return type(value) is int and 0 <= value <= MAX_INT


def numel(shape):
    total = 1
    for n in shape:
        total *= n
    return total


def finish(arr, kind):
    """Raw-typed copy -> the array a caller sees: bf16 widened, bools 0/1, native byte order."""
    if kind == BF16:  # np.asarray: on 0-d input these operations return numpy scalars
        return np.asarray(arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if kind == BOOL:
        return np.asarray(arr != 0)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def contiguous_array(buf, byte_offset, kind, shape):
    """Fresh array of ``shape`` from ``numel(shape)`` elements starting at ``byte_offset`` of ``buf``."""
    count = numel(shape)
    raw = np.frombuffer(buf, dtype=raw_dtype(kind), count=count, offset=byte_offset)
    out = finish(np.array(raw), kind).reshape(shape)
    del raw  # drop the view before the caller closes an mmap
    return out
