"""Read MindSpore ``.ckpt`` files in pure Python (no MindSpore, no protobuf library), with strict bounds.

Why not ``mindspore.load_checkpoint``: it hands the bytes to C++ (``convert_bytes_to_tensor``), which
trusts the recorded dims, so a corrupt file can crash or hang the process instead of giving an error.
Here every length, dim and type is checked with Python ints before a byte is copied, so a bad file is
one :class:`CheckpointError` line.

The format (MindSpore 2.x ``checkpoint.proto``, proto2)::

    message Checkpoint { message Value { required string tag = 1;
                                         oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

``save_checkpoint`` writes one serialized ``Checkpoint`` (holding one Value) per parameter, so the
file is their concatenation; a tensor over 512 MiB is split into consecutive Values with the same tag
(joined here, as MindSpore does). ``append_dict`` strings are ``tensor_type "str"`` with the text as
UTF-32-LE (numpy ``'U'`` bytes). ``crc_check=True`` appends ``b"crc_num"`` + a 10-byte big-endian CRC-32
of everything before it; it is verified when present.
"""
import mmap
import os
import zlib

import numpy as np

from ldm.errors import CheckpointError
from ldm.io.raw_tensors import BF16, BOOL, MAX_DIMS, contiguous_array, element_size, numel

# MindSpore tensor_type -> raw element kind (see mindspore/train/serialization.py _tensor_to_np_type)
MS_TYPES = {
    "Float32": "<f4", "Float16": "<f2", "Float64": "<f8", "BFloat16": BF16, "Bool": BOOL,
    "Int8": "i1", "UInt8": "u1", "Int16": "<i2", "UInt16": "<u2", "Int32": "<i4", "UInt32": "<u4",
    "Int64": "<i8", "UInt64": "<u8",
}
STRING_TYPE = "str"
CRC_MARK = b"crc_num"
CRC_TRAILER = len(CRC_MARK) + 10


class _Bad(Exception):
    """Internal: a structural problem; turned into one CheckpointError naming the file."""


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise _Bad(f"a number runs past its message at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Bad(f"an over-long number at byte {pos}")
    if result >> 64:
        raise _Bad(f"a number wider than 64 bits at byte {pos}")
    return result, pos


def _fields(buf, start, end):
    """Yield ``(field_number, wire_type, value)`` of one message; value is an int or a (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Bad(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Bad(f"a field of {length} bytes at byte {pos} runs past its message")
            value, pos = (pos, pos + length), pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > end - pos:
                raise _Bad(f"a fixed-width field runs past its message at byte {pos}")
            value, pos = None, pos + width
        else:
            raise _Bad(f"unsupported protobuf wire type {wire} at byte {pos}")
        yield number, wire, value


def _once(seen, number, what):
    if number in seen:
        raise _Bad(f"{what} is given twice")
    seen.add(number)


def _text(buf, span, what):
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"{what} is not UTF-8") from exc


def _dim(value):
    if value >> 63:  # int64 on the wire: the top bit set means negative
        raise _Bad(f"negative dim {value - (1 << 64)}")
    return value


def _tensor_proto(buf, start, end, tag):
    dims, kind, content, seen = [], None, None, set()
    for number, wire, value in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(_dim(value))
        elif number == 1 and wire == 2:  # packed encoding
            pos, stop = value
            while pos < stop:
                item, pos = _varint(buf, pos, stop)
                dims.append(_dim(item))
        elif number == 2 and wire == 2:
            _once(seen, number, f"the type of {tag!r}")
            kind = _text(buf, value, f"the type of {tag!r}")
        elif number == 3 and wire == 2:
            _once(seen, number, f"the data of {tag!r}")
            content = value
        elif number in (1, 2, 3):
            raise _Bad(f"field {number} of tensor {tag!r} has the wrong wire type {wire}")
    if kind is None or content is None:
        raise _Bad(f"tensor {tag!r} lacks its {'type' if kind is None else 'data'}")
    if len(dims) > MAX_DIMS:
        raise _Bad(f"tensor {tag!r} has {len(dims)} dims (at most {MAX_DIMS})")
    return tuple(dims), kind, content


def _value(buf, start, end):
    tag = tensor = None
    seen = set()
    for number, wire, value in _fields(buf, start, end):
        if number == 1 and wire == 2:
            _once(seen, number, "a parameter name")
            tag = _text(buf, value, "a parameter name")
        elif number == 2 and wire == 2:
            _once(seen, number, "a tensor")
            tensor = value
        elif number == 3:
            raise _Bad(f"entry {tag or '?'!r} is a MapParameter, which this reader does not support")
        elif number in (1, 2):
            raise _Bad(f"field {number} of a parameter entry has the wrong wire type {wire}")
    if tag is None:
        raise _Bad("a parameter entry has no name")
    if tensor is None:
        raise _Bad(f"entry {tag!r} holds no tensor")
    return (tag,) + _tensor_proto(buf, tensor[0], tensor[1], tag)


def parse_entries(buf, size):
    """``[(name, dims, tensor_type, [(start, end), ...])]`` in file order, chunks of one tag joined."""
    end = size
    if size >= CRC_TRAILER and bytes(buf[size - CRC_TRAILER:size - 10]) == CRC_MARK:
        end = size - CRC_TRAILER
        recorded = int.from_bytes(bytes(buf[size - 10:size]), "big")
        with memoryview(buf) as view:
            crc = zlib.crc32(view[:end])
        if crc != recorded:
            raise _Bad("its CRC-32 does not match: the file was damaged after it was written (disk or copy); "
                       "use another copy or an earlier checkpoint")
    entries, names = [], set()
    for number, wire, value in _fields(buf, 0, end):
        if number != 1:
            continue  # unknown top-level field: skipped, as protobuf does
        if wire != 2:
            raise _Bad(f"a parameter entry has the wrong wire type {wire}")
        tag, dims, kind, content = _value(buf, *value)
        if entries and entries[-1][0] == tag:  # a slice of a tensor over 512 MiB
            if entries[-1][1:3] != (dims, kind):
                raise _Bad(f"the slices of {tag!r} disagree on shape or type")
            entries[-1][3].append(content)
            continue
        if tag in names:
            raise _Bad(f"parameter {tag!r} appears twice")
        names.add(tag)
        entries.append((tag, dims, kind, [content]))
    return entries


def _decode(buf, tag, dims, kind, chunks):
    nbytes = sum(b - a for a, b in chunks)
    if kind == STRING_TYPE:
        if len(chunks) > 1:  # MindSpore never slices text, and would decode such a join differently
            raise _Bad(f"text entry {tag!r} is split into slices")
        raw = bytes(buf[chunks[0][0]:chunks[0][1]])
        if nbytes % 4:
            raise _Bad(f"text entry {tag!r} has {nbytes} bytes, not a multiple of 4")
        try:
            return raw.decode("utf-32-le").rstrip("\x00")  # numpy 'U' drops trailing NULs too
        except UnicodeDecodeError as exc:
            raise _Bad(f"text entry {tag!r} is not valid UTF-32") from exc
    if kind not in MS_TYPES:
        raise _Bad(f"tensor {tag!r} has unsupported type {kind[:40]!r}")
    elem = MS_TYPES[kind]
    itemsize = element_size(elem)
    # MindSpore reads dims [0] as a scalar (it writes [0] for text; it never saves empty tensors)
    shape = () if dims == (0,) else dims
    need = numel(shape) * itemsize
    if need != nbytes:
        raise _Bad(f"tensor {tag!r} of shape {shape} and type {kind} needs {need} bytes but holds {nbytes}")
    if len(chunks) == 1:
        return contiguous_array(buf, chunks[0][0], elem, shape)
    if any((b - a) % itemsize for a, b in chunks):
        raise _Bad(f"a slice of {tag!r} splits an element")
    parts = [contiguous_array(buf, a, elem, ((b - a) // itemsize,)) for a, b in chunks]
    return np.concatenate(parts).reshape(shape)


def read_ckpt(path):
    """``{name: ndarray | str}`` of a MindSpore .ckpt (append-dict text entries stay ``str``).

    bf16 widens to float32 (as the torch and safetensors readers do); every problem is one
    CheckpointError that names the file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise CheckpointError(f"{path}: empty file, not a MindSpore checkpoint")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            out = {}
            for tag, dims, kind, chunks in parse_entries(mm, size):
                out[tag] = _decode(mm, tag, dims, kind, chunks)
    except _Bad as exc:
        raise CheckpointError(f"{path}: corrupt MindSpore checkpoint: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not out:
        raise CheckpointError(f"{path}: MindSpore checkpoint holds no parameters")
    return out
