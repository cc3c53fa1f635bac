"""Read ``.safetensors`` with a strict header check of our own, then copy validated byte ranges.

Layout: 8-byte little-endian header length N, N bytes of JSON (``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``, offsets relative to the data after the
header), then the data. Everything in the header is checked with Python ints before any byte is
read: known dtype, non-negative int dims, ``end - begin == numel * itemsize``, ranges inside the
file and not overlapping, no duplicate names. BF16 widens to float32 (numpy has no bfloat16).
"""
import json
import mmap
import os
import struct

from ldm.errors import CheckpointError
from ldm.io.tensor_checks import DIGEST_KEY, check_content_crc32
from ldm.io.raw_tensors import BF16, BOOL, MAX_DIMS, contiguous_array, element_size, is_count, numel

DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": BF16, "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": BOOL,
}
MAX_HEADER = 100_000_000  # the safetensors library's own limit


class _Bad(Exception):
    pass


def _unique_pairs(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"header names {key[:80]!r} twice")
        out[key] = value
    return out


def _no_constant(name):
    raise _Bad(f"header holds {name}, which is not JSON")


def _short(name):
    return repr(name if len(name) <= 80 else name[:77] + "...")


def parse_header(raw, data_len):
    """``[(name, kind, shape, begin, end)]`` from the JSON header bytes; _Bad on any inconsistency."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Bad(f"header is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(header, dict):
        raise _Bad("header is not a JSON object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise _Bad("__metadata__ must map strings to strings")
            continue
        label = f"tensor {_short(name)}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise _Bad(f"{label} lacks dtype, shape or data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _Bad(f"{label} has unsupported dtype {str(dtype)[:40]!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(is_count(n) for n in shape):
            raise _Bad(f"{label} has an invalid shape {str(shape)[:80]} (non-negative ints, at most "
                       f"{MAX_DIMS} dims)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_count(o) for o in offsets)):
            raise _Bad(f"{label} has invalid data_offsets {str(offsets)[:80]}")
        begin, end = offsets
        if begin > end or end > data_len:
            raise _Bad(f"{label} lies at bytes {begin}-{end} of the data, which has {data_len} bytes "
                       "(truncated file?)")
        kind = DTYPES[dtype]
        need = numel(shape) * element_size(kind)
        if need != end - begin:
            raise _Bad(f"{label} of shape {tuple(shape)} and dtype {dtype} needs {need} bytes but its "
                       f"offsets span {end - begin}")
        entries.append((name, kind, tuple(shape), begin, end))
    _check_no_overlap(entries)
    return entries


def _check_no_overlap(entries):
    spans = sorted((begin, end, name) for name, _, _, begin, end in entries if end > begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _Bad(f"tensors {_short(n0)} (bytes {b0}-{e0}) and {_short(n1)} (bytes {b1}-{e1}) overlap")


def read_safetensors(path):
    """``{name: ndarray}`` of a .safetensors file; one CheckpointError naming the file on any problem."""
    try:
        size = os.path.getsize(path)
        if size < 8:
            raise _Bad(f"file is {size} bytes, too short for a header")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            (header_len,) = struct.unpack("<Q", mm[:8])
            if header_len > size - 8:
                raise _Bad(f"header length {header_len} runs past the end of the file ({size} bytes; "
                           "truncated?)")
            if header_len > MAX_HEADER:
                raise _Bad(f"header length {header_len} is over the {MAX_HEADER}-byte limit")
            start = 8 + header_len
            entries = parse_header(mm[8:start], size - start)
            arrays = {name: contiguous_array(mm, start + begin, kind, shape)
                      for name, kind, shape, begin, _ in entries}
            recorded = json.loads(mm[8:start].decode("utf-8")).get("__metadata__", {}).get(DIGEST_KEY)
    except _Bad as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if recorded is not None:        # written by us (ldm.convert.readers.write_safetensors)
        check_content_crc32(arrays, recorded, path)
    return arrays
