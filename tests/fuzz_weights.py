"""Fuzz worker for the weight-file readers; tests/test_weight_fuzz.py runs one per format:

    python tests/fuzz_weights.py FORMAT COUNT SEED OUT.json [KEEP_DIR]

FORMAT is ``zip`` / ``legacy`` (PyTorch), ``safetensors`` or ``ckpt`` (MindSpore). The worker makes
COUNT mutants of valid seed files (bit flips, truncation, header/offset edits, crafted storages,
strides, shapes and dtypes), loads each with the repo's reader in a forked child (so a segfault or
hang is recorded, not fatal) and checks the outcome against an independent strict reference
decoding: a file is either rejected with one CheckpointError line naming it, or every loaded array
equals what the reference reads from the bytes. It imports neither MindSpore nor torch. The summary
(verdict counts, failures, time) goes to OUT.json; failing mutants are copied to KEEP_DIR.

The module also holds the writers the explicit tests use to craft files: a protocol-2 pickle emitter
for PyTorch's zip and legacy formats, and a protobuf emitter for MindSpore's .ckpt.
"""
import io
import itertools
import json
import os
import pickle
import pickletools
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter, OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
SEEDS = os.path.join(HERE, "fixtures", "weight_fuzz")
TORCH_SEEDS = {"zip": os.path.join(HERE, "fixtures", "text", "torch_formats_zip.pt"),
               "legacy": os.path.join(HERE, "fixtures", "text", "torch_formats_legacy.pt")}
EXT = {"zip": ".pth", "legacy": ".pth", "safetensors": ".safetensors", "ckpt": ".ckpt"}
TIMEOUT_S = 10.0
INTERESTING = [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 16, 29, 30, 31, 255, 256, 1000, 4096, 2**31 - 1, 2**31,
               2**32, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 5, 10**30,
               -1, -2, -4, -2**31, -2**63, -2**63 - 1]
ODD_VALUES = [None, True, 1.5, "3", (), [2], (1, 2)]


# ============================================================== PyTorch: protocol-2 pickle emitter
class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    def __init__(self, fn, args):
        self.fn, self.args = fn, tuple(args)


class Persid:
    def __init__(self, pid):
        self.pid = tuple(pid)


def _emit_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def _emit(obj, out):
    if obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += _emit_int(obj)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, Global):
        out += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    elif isinstance(obj, Call):
        _emit(obj.fn, out)
        _emit(obj.args, out)
        out += b"R"
    elif isinstance(obj, Persid):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, tuple):
        out += b"("
        for v in obj:
            _emit(v, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for v in obj:
            _emit(v, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for k, v in obj.items():
            _emit(k, out)
            _emit(v, out)
        out += b"u"
    else:
        raise TypeError(type(obj))
    return out


def pickle_bytes(obj):
    """Protocol-2 pickle of plain values plus Global/Call/Persid, without memo (as torch's, minus PUTs)."""
    return bytes(_emit(obj, bytearray(b"\x80\x02"))) + b"."


def tensor_call(key, storage_class, numel, offset, size, stride, v3_dtype=None, location="cpu",
                pid_extra=(), fn=None):
    """The pickled ``_rebuild_tensor_v2`` (or ``_v3`` with an untyped storage) call torch writes."""
    pid = ("storage", Global("torch", storage_class), key, location, numel) + tuple(pid_extra)
    hooks = Call(Global("collections", "OrderedDict"), ())
    if v3_dtype is None:
        args = (Persid(pid), offset, size, stride, False, hooks)
        return Call(Global("torch._utils", fn or "_rebuild_tensor_v2"), args)
    return Call(Global("torch._utils", fn or "_rebuild_tensor_v3"),
                (Persid(pid), offset, size, stride, False, hooks, Global("torch", v3_dtype)))


def torch_zip(pkl, storages, root="archive", drop=(), extra=()):
    """A torch zip checkpoint: ``storages`` maps key -> raw bytes (all members stored, as torch does)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", pkl)
        zf.writestr(f"{root}/byteorder", "little")
        for key, raw in storages.items():
            if key not in drop:
                zf.writestr(f"{root}/data/{key}", raw)
        for name, raw in extra:
            zf.writestr(name, raw)
        zf.writestr(f"{root}/version", "3\n")
    return buf.getvalue()


def torch_legacy(obj_pkl, keys, storages, counts=None, sys_info=None):
    """A legacy torch file: magic, protocol, sys info, object pickle, key list, (count, bytes) per key.

    ``storages`` maps key -> (itemsize, raw); ``counts`` overrides the recorded element counts."""
    info = sys_info if sys_info is not None else {"protocol_version": 1001, "little_endian": True,
                                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = bytearray()
    for record in (0x1950A86A20F9469CFC6C, 1001, info):
        out += pickle.dumps(record, protocol=2)
    out += obj_pkl + pickle.dumps(keys, protocol=2)
    for key in keys:
        if key in storages:
            itemsize, raw = storages[key]
            count = (counts or {}).get(key, len(raw) // itemsize)
            out += struct.pack("<q", count) + raw
    return bytes(out)


ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
            "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
            "UntypedStorage": 1}


def synthetic_spec(rng):
    """A valid state dict over shared storages: views with offsets/strides, scalars (fp32, bool, bf16),
    an empty tensor, bf16, bool, and a v3 tensor on an untyped storage. Returns (storages, tensors)."""
    f32 = np.arange(12, dtype="<f4") * 0.5 - 2
    storages = {
        "0": ["FloatStorage", f32.tobytes()],
        "1": ["HalfStorage", np.linspace(-1, 1, 6).astype("<f2").tobytes()],
        "2": ["LongStorage", np.array([5, -7, 2**40, 3], "<i8").tobytes()],
        "3": ["BFloat16Storage", (np.arange(8, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()],
        "4": ["BoolStorage", bytes([0, 1, 1, 0, 1])],
        "5": ["UntypedStorage", np.array([1.25, -3.5, 7.0, 0.0], "<f4").tobytes()],
    }
    tensors = OrderedDict([
        ("w", dict(key="0", offset=0, size=(3, 4), stride=(4, 1))),
        ("wt", dict(key="0", offset=1, size=(2, 3), stride=(1, 4))),
        ("h", dict(key="1", offset=0, size=(6,), stride=(1,))),
        ("i", dict(key="2", offset=1, size=(3,), stride=(1,))),
        ("b", dict(key="3", offset=0, size=(2, 4), stride=(4, 1))),
        ("m", dict(key="4", offset=0, size=(5,), stride=(1,))),
        ("s", dict(key="0", offset=5, size=(), stride=())),
        ("e", dict(key="1", offset=6, size=(0,), stride=(1,))),
        ("bc", dict(key="0", offset=2, size=(3, 2), stride=(0, 1))),
        ("v3", dict(key="5", offset=1, size=(3,), stride=(1,), v3_dtype="float32")),
        ("sb", dict(key="4", offset=1, size=(), stride=())),
        ("sbf", dict(key="3", offset=2, size=(), stride=())),
    ])
    return storages, tensors


def spec_object(storages, tensors, wrap=False):
    obj = OrderedDict()
    for name, t in tensors.items():
        cls, raw = storages.get(t["key"], ["FloatStorage", b""])[:2]
        cls = t.get("storage_class", cls)
        numel = t.get("numel", len(raw) // ITEMSIZE.get(cls, 1))
        obj[name] = tensor_call(t["key"], cls, numel, t["offset"], t["size"], t["stride"], t.get("v3_dtype"),
                                pid_extra=t.get("pid_extra", ()), fn=t.get("fn"))
    return {"state_dict": obj, "epoch": 3} if wrap else obj


def spec_files(storages, tensors, fmt, wrap=False, **kw):
    pkl = pickle_bytes(spec_object(storages, tensors, wrap))
    if fmt == "zip":
        return torch_zip(pkl, {k: v[1] for k, v in storages.items()}, **kw)
    keys = kw.pop("keys", list(storages))
    return torch_legacy(pkl, keys, {k: (ITEMSIZE.get(v[0], 1), v[1]) for k, v in storages.items()}, **kw)


# ============================================================== MindSpore .ckpt: protobuf emitter
def _varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(number, wire, payload):
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def pb_tensor(dims, kind, content, packed=False):
    if packed:
        body = _field(1, 2, b"".join(_varint(d) for d in dims)) if dims else b""
    else:
        body = b"".join(_field(1, 0, _varint(d)) for d in dims)
    return body + _field(2, 2, kind.encode()) + _field(3, 2, content)


def pb_value(tag, dims, kind, content, packed=False):
    """One serialized ``Checkpoint`` holding one Value, as ``save_checkpoint`` writes per parameter."""
    value = _field(1, 2, tag.encode()) + _field(2, 2, pb_tensor(dims, kind, content, packed))
    return _field(1, 2, value)


# ============================================================== reference decoders (strict, simple)
class Reject(Exception):
    """The reference refuses the bytes (out-of-range element, inconsistent sizes...)."""


# raw bit patterns (floats as unsigned ints, so NaN payloads survive), and the dtype they are viewed as
REF_FORMATS = {"FloatStorage": ("<I", 4), "DoubleStorage": ("<Q", 8), "HalfStorage": ("<H", 2),
               "BFloat16Storage": ("<H", 2), "LongStorage": ("<q", 8), "IntStorage": ("<i", 4),
               "ShortStorage": ("<h", 2), "CharStorage": ("<b", 1), "ByteStorage": ("<B", 1),
               "BoolStorage": ("<B", 1)}
REF_BITS = {"FloatStorage": np.uint32, "DoubleStorage": np.uint64, "HalfStorage": np.uint16}
REF_NUMPY = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "BFloat16Storage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
REF_DTYPES = {"float32": "FloatStorage", "float": "FloatStorage", "float64": "DoubleStorage",
              "double": "DoubleStorage", "float16": "HalfStorage", "half": "HalfStorage",
              "bfloat16": "BFloat16Storage", "int64": "LongStorage", "long": "LongStorage",
              "int32": "IntStorage", "int": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
              "uint8": "ByteStorage", "bool": "BoolStorage"}


class _RefStype:
    def __init__(self, name):
        self.name = name


class _RefDtype:
    def __init__(self, name):
        self.name = name


class _RefStorage:
    def __init__(self, pid):
        self.pid, self.raw = pid, None


class _RefTensor:
    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype


class _RefInert:
    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _ref_v2(storage, offset, size, stride, *rest):
    return _RefTensor(storage, offset, size, stride)


def _ref_v3(storage, offset, size, stride, rg, hooks, dtype, *rest):
    return _RefTensor(storage, offset, size, stride, dtype)


REF_GLOBALS = {("torch._utils", "_rebuild_tensor"): _ref_v2, ("torch._utils", "_rebuild_tensor_v2"): _ref_v2,
               ("torch._utils", "_rebuild_tensor_v3"): _ref_v3,
               ("torch._utils", "_rebuild_parameter"): lambda data, *rest: data,
               ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *rest: data,
               ("torch._tensor", "_rebuild_from_type_v2"): lambda func, new_type, args, state: func(*args),
               ("collections", "OrderedDict"): OrderedDict, ("torch", "Size"): tuple,
               ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice}
REF_INERT = ("pytorch_lightning.", "lightning_fabric.", "lightning.", "torch.torch_version", "omegaconf.",
             "typing.", "numpy.")


class _RefUnpickler(pickle._Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in REF_GLOBALS:
            return REF_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _RefStype(name)
        if module == "torch" and name in REF_DTYPES:
            return _RefDtype(name)
        if f"{module}.{name}".startswith(REF_INERT):
            return type(name, (_RefInert,), {})
        raise Reject(f"global {module}.{name}")

    def persistent_load(self, pid):
        s = _RefStorage(pid)
        self.storages.append(s)
        return s


def _ref_class(stype):
    name = stype.name
    return "ByteStorage" if name == "UntypedStorage" else name


def _ref_elements(t):
    """Element-by-element read with explicit bounds: the arbiter of what a tensor may contain."""
    raw = t.storage.raw
    cls = REF_DTYPES[t.dtype.name] if t.dtype is not None else _ref_class(t.storage.pid[1])
    fmt, itemsize = REF_FORMATS[cls]
    size, stride, offset = list(t.size), list(t.stride), t.offset
    if len(size) != len(stride) or any(n < 0 for n in size) or offset < 0 or any(s < 0 for s in stride):
        raise Reject("bad geometry")
    count = 1
    for n in size:
        count *= n
    if count <= 100_000:
        values = []
        for index in itertools.product(*[range(n) for n in size]):
            pos = (offset + sum(i * s for i, s in zip(index, stride))) * itemsize
            if pos < 0 or pos + itemsize > len(raw):
                raise Reject(f"element at byte {pos} outside the {len(raw)}-byte storage")
            values.append(struct.unpack_from(fmt, raw, pos)[0])
    else:  # a big broadcast: exact bounds with Python ints, then a gather by explicit index grids
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if count > 50_000_000 or (last + 1) * itemsize > len(raw):
            raise Reject("broadcast outside the storage (or too big to check)")
        grid = np.full([1] * len(size), offset, np.int64)
        for axis, (n, s) in enumerate(zip(size, stride)):
            shape = [1] * len(size)
            shape[axis] = n
            grid = grid + (np.arange(n, dtype=np.int64) * s).reshape(shape)
        values = np.frombuffer(raw, np.dtype(fmt), count=len(raw) // itemsize)[grid.ravel()].tolist()
    if cls == "BFloat16Storage":
        arr = (np.array(values, np.uint32) << 16).view(np.float32)
    elif cls == "BoolStorage":
        arr = np.array([v != 0 for v in values], np.bool_)
    elif cls in REF_BITS:
        arr = np.array(values, dtype=REF_BITS[cls]).view(REF_NUMPY[cls])
    else:
        arr = np.array(values, dtype=REF_NUMPY[cls])
    return arr.reshape(size)


def _ref_resolve(obj, memo=None):
    """Replace reference tensors by their arrays, walking the same containers as collect()."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, _RefTensor):
        out = _ref_elements(obj)
    elif isinstance(obj, tuple):
        out = tuple(_ref_resolve(v, memo) for v in obj)
    elif isinstance(obj, dict):
        memo[id(obj)] = (obj, obj)
        for k in list(obj):
            obj[k] = _ref_resolve(obj[k], memo)
        return obj
    elif isinstance(obj, list):
        memo[id(obj)] = (obj, obj)
        for i, v in enumerate(obj):
            obj[i] = _ref_resolve(v, memo)
        return obj
    elif isinstance(obj, _RefInert):
        memo[id(obj)] = (obj, obj)
        for k, v in list(vars(obj).items()):
            setattr(obj, k, _ref_resolve(v, memo))
        return obj
    else:
        return obj
    memo[id(obj)] = (obj, out)
    return out


def ref_torch_zip(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")][0]
        root = pkl[:-len("data.pkl")]
        storages = []
        obj = _RefUnpickler(io.BytesIO(zf.read(pkl)), storages).load()
        cache = {}
        for s in storages:
            key = s.pid[2]
            if key not in cache:
                cache[key] = zf.read(f"{root}data/{key}")
            s.raw = cache[key]
    return _ref_resolve(obj)


def ref_torch_legacy(path):
    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    for _ in range(3):
        _RefUnpickler(data, []).load()
    storages = []
    obj = _RefUnpickler(data, storages).load()
    keys = _RefUnpickler(data, []).load()
    raws = {}
    by_key = {s.pid[2]: s for s in storages}
    for key in keys:
        itemsize = REF_FORMATS[_ref_class(by_key[key].pid[1])][1]
        (count,) = struct.unpack("<q", data.read(8))
        raw = data.read(count * itemsize)
        if count < 0 or len(raw) != count * itemsize:
            raise Reject("short storage")
        raws[key] = raw
    for s in storages:
        raw = raws[s.pid[2]]
        view = s.pid[5] if len(s.pid) > 5 else None
        if view is not None:
            itemsize = REF_FORMATS[_ref_class(s.pid[1])][1]
            _, start, n = view
            if start < 0 or n < 0 or (start + n) * itemsize > len(raw):
                raise Reject("view outside its storage")
            raw = raw[start * itemsize:(start + n) * itemsize]
        s.raw = raw
    return _ref_resolve(obj)


ST_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
            "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1"}


def ref_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        raw = data[8 + n + begin:8 + n + end]
        count = 1
        for d in shape:
            count *= d
        itemsize = np.dtype(ST_NUMPY[dtype]).itemsize
        if begin < 0 or end < begin or len(raw) != end - begin or count * itemsize != len(raw):
            raise Reject(f"{name}: bytes do not fit")
        arr = np.frombuffer(raw, ST_NUMPY[dtype]).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "BOOL":
            arr = arr != 0
        out[name] = arr.astype(arr.dtype.newbyteorder("="))
    return out


def official_safetensors(path):
    """What the safetensors library itself loads (None where it refuses): a second opinion."""
    try:
        from safetensors.numpy import load_file
        return load_file(path)
    except Exception:  # the library's own errors: it refuses the file
        return None


_PB = {}


def _checkpoint_message():
    """``Checkpoint`` class built from the checkpoint.proto schema with google.protobuf (no MindSpore)."""
    if "cls" not in _PB:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(name="fuzz_checkpoint.proto", syntax="proto2")
        tp = fdp.message_type.add(name="TensorProto")
        tp.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
        tp.field.add(name="tensor_type", number=2, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
        tp.field.add(name="tensor_content", number=3, type=F.TYPE_BYTES, label=F.LABEL_REQUIRED)
        mp = fdp.message_type.add(name="MapTensorProto")
        mp.field.add(name="tensor", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".TensorProto")
        ck = fdp.message_type.add(name="Checkpoint")
        value = ck.nested_type.add(name="Value")
        value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
        value.oneof_decl.add(name="value")
        value.field.add(name="tensor", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                        type_name=".TensorProto", oneof_index=0)
        value.field.add(name="maptensor", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                        type_name=".MapTensorProto", oneof_index=0)
        ck.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".Checkpoint.Value")
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _PB["cls"] = message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint"))
    return _PB["cls"]


MS_NUMPY = {"Float32": "<f4", "Float16": "<f2", "Float64": "<f8", "BFloat16": "<u2", "Bool": "u1", "Int8": "i1",
            "UInt8": "u1", "Int16": "<i2", "UInt16": "<u2", "Int32": "<i4", "UInt32": "<u4", "Int64": "<i8",
            "UInt64": "<u8"}


def ckpt_entries(data):
    """Values of a .ckpt as protobuf parses them (crc trailer removed as MindSpore does)."""
    if data[-17:-10] == b"crc_num":
        data = data[:-17]
    msg = _checkpoint_message()()
    msg.ParseFromString(data)
    return [(v.tag, list(v.tensor.dims), v.tensor.tensor_type, v.tensor.tensor_content, v.HasField("tensor"))
            for v in msg.value]


def ref_ckpt(path):
    """MindSpore's own decoding rules (serialization.py) over protobuf's parse of the file."""
    with open(path, "rb") as f:
        entries = ckpt_entries(f.read())
    out, parts = {}, []
    for i, (tag, dims, kind, content, has_tensor) in enumerate(entries):
        if not has_tensor:
            raise Reject("map tensor")
        parts.append(content)
        if i + 1 < len(entries) and entries[i + 1][0] == tag:
            continue
        joined = b"".join(parts)
        parts = []
        if kind == "str":
            out[tag] = np.array(str(np.frombuffer(joined, f"<U{len(content) // 4}")[0]))
            continue
        shape = [] if dims == [0] else dims
        count = 1
        for d in shape:
            count *= d
        arr = np.frombuffer(joined, MS_NUMPY[kind])
        if arr.size != count or any(d < 0 for d in shape):
            raise Reject("content does not fit dims")
        arr = arr.reshape(shape)
        if kind == "BFloat16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif kind == "Bool":
            arr = arr != 0
        out[tag] = arr.astype(arr.dtype.newbyteorder("="))
    return out


REFERENCES = {"zip": ref_torch_zip, "legacy": ref_torch_legacy, "safetensors": ref_safetensors, "ckpt": ref_ckpt}


# ============================================================== comparing outcomes
def collect(obj):
    """``{path: ndarray}`` of every array reachable through dicts, lists, tuples and object attributes."""
    out, seen = {}, set()

    def walk(o, path):
        if isinstance(o, np.ndarray):
            out[path] = o
            return
        if id(o) in seen or isinstance(o, (str, bytes, int, float, type(None))):
            return
        if isinstance(o, (dict, list, tuple)) or hasattr(o, "__dict__"):
            seen.add(id(o))
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, path + (repr(k),))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, path + (i,))
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            for k, v in sorted(vars(o).items()):
                walk(v, path + ("." + k,))

    walk(obj, ())
    return out


def differences(got, ref):
    got, ref = collect(got), collect(ref)
    if set(got) != set(ref):
        return f"names differ: only loaded {sorted(map(str, set(got) - set(ref)))[:3]}, only in reference " \
               f"{sorted(map(str, set(ref) - set(got)))[:3]}"
    for path, a in got.items():
        b = ref[path]
        if a.dtype == b.dtype == np.bool_:  # any non-zero byte is True (safetensors.numpy keeps the byte)
            a, b = a.view(np.uint8) != 0, b.view(np.uint8) != 0
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return f"{path}: loaded {a.dtype}{a.shape} differs from reference {b.dtype}{b.shape}"
    return None


# ============================================================== one mutant, guarded
def check_file(fmt, path):
    """Verdict for one file: rejected (one-line CheckpointError naming it) or loaded-and-correct."""
    from ldm.convert.readers import read_weight_file
    from ldm.convert.torch_pickle import load_torch_file
    from ldm.errors import CheckpointError
    try:
        got = load_torch_file(path) if fmt in ("zip", "legacy") else read_weight_file(path)
    except CheckpointError as exc:
        msg = str(exc)
        if "\n" in msg or os.path.basename(path) not in msg:
            return {"verdict": "bad-message", "msg": msg[:300]}
        return {"verdict": "rejected", "msg": msg[:300]}
    except BaseException as exc:  # anything else is a reader bug
        return {"verdict": "wrong-exception", "msg": f"{type(exc).__name__}: {str(exc)[:200]}",
                "where": traceback.format_exc(limit=-3)[-800:]}
    try:
        ref = REFERENCES[fmt](path)
    except BaseException as exc:
        return {"verdict": "loaded-but-reference-rejects", "msg": f"{type(exc).__name__}: {str(exc)[:200]}"}
    diff = differences(got, ref)
    if diff:
        return {"verdict": "mismatch", "msg": diff[:300]}
    result = {"verdict": "loaded", "arrays": len(collect(got))}
    if fmt == "safetensors":
        official = official_safetensors(path)
        if official is not None and differences(got, official):
            return {"verdict": "mismatch", "msg": "differs from safetensors.numpy: " + differences(got, official)}
    return result


def _memory_cap():
    """Let the child allocate ~1.5 GB beyond what it has: a runaway allocation becomes MemoryError."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + (3 << 29)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_guarded(fmt, path, timeout=TIMEOUT_S):
    """check_file in a forked child: a signal (segfault), a hang or a lost result is a verdict too."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            _memory_cap()
            result = check_file(fmt, path)
        except BaseException as exc:
            result = {"verdict": "worker-error", "msg": repr(exc)[:300]}
        data = json.dumps(result).encode()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    chunks, deadline, timed_out = [], time.monotonic() + timeout, False
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([f], [], [], left)[0]:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            chunk = f.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"verdict": "hang", "msg": f"no answer within {timeout} s"}
    if os.WIFSIGNALED(status):
        return {"verdict": "crash", "msg": f"killed by signal {os.WTERMSIG(status)}"}
    if not chunks:
        return {"verdict": "no-result", "msg": f"exit status {status}"}
    return json.loads(b"".join(chunks))


# ============================================================== mutators
def flip_bits(rng, data, lo=0, hi=None):
    data = bytearray(data)
    hi = len(data) if hi is None else hi
    for _ in range(rng.choice([1, 1, 2, 4, 8])):
        i = rng.randrange(lo, hi)
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def byte_edit(rng, data, lo=0, hi=None):
    """One random edit: bit flips, truncation, an overwritten / inserted / deleted / repeated run."""
    hi = len(data) if hi is None else hi
    kind = rng.randrange(6)
    i = rng.randrange(lo, max(lo + 1, hi))
    if kind == 0:
        return "flip", flip_bits(rng, data, lo, hi)
    if kind == 1:
        return "truncate", data[:i]
    if kind == 2:
        n = rng.choice([1, 2, 4, 8])
        return "overwrite", data[:i] + bytes(rng.choice([0, 0xFF, rng.randrange(256)]) for _ in range(n)) + data[i + n:]
    if kind == 3:
        return "insert", data[:i] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 8]))) + data[i:]
    if kind == 4:
        return "delete", data[:i] + data[i + rng.choice([1, 2, 7, 64]):]
    j = rng.randrange(lo, max(lo + 1, hi))
    return "repeat", data[:i] + data[j:j + rng.choice([4, 16, 100])] + data[i:]


PICKLE_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1"}
GLOBAL_SWAPS = ["torch FloatStorage", "torch HalfStorage", "torch BFloat16Storage", "torch LongStorage",
                "torch BoolStorage", "torch UntypedStorage", "torch ComplexFloatStorage", "torch QInt8Storage",
                "torch._utils _rebuild_tensor_v3", "torch._utils _rebuild_qtensor", "os system",
                "builtins eval", "numpy.core.multiarray scalar", "collections OrderedDict", "torch Size",
                "builtins slice", "pytorch_lightning.callbacks ModelCheckpoint"]


def pickle_edit(rng, pkl):
    """Edit one int or global of a (frame-less, protocol-2) pickle at the opcode level."""
    ops = list(pickletools.genops(pkl))
    spans = [(op, arg, pos, ops[i + 1][2] if i + 1 < len(ops) else len(pkl)) for i, (op, arg, pos) in enumerate(ops)]
    ints = [s for s in spans if s[0].name in PICKLE_INT_OPS]
    globs = [s for s in spans if s[0].name == "GLOBAL"]
    if globs and rng.random() < 0.25:
        _, _, a, b = rng.choice(globs)
        module, name = rng.choice(GLOBAL_SWAPS).split()
        return "global", pkl[:a] + b"c" + module.encode() + b"\n" + name.encode() + b"\n" + pkl[b:]
    _, arg, a, b = rng.choice(ints)
    value = rng.choice(INTERESTING + [arg + 1, arg - 1, arg * 2, arg * 1000])
    return "int", pkl[:a] + _emit_int(value) + pkl[b:]


def mutate_spec(rng, storages, tensors):
    """Change one field of the synthetic spec to something hostile; returns a label."""
    name = rng.choice(list(tensors))
    t = tensors[name]
    what = rng.randrange(12)
    if what == 0:
        t["offset"] = rng.choice(INTERESTING + ODD_VALUES)
        return f"offset={str(t['offset'])[:20]}"
    if what in (1, 2):
        field = "size" if what == 1 else "stride"
        dims = list(t[field]) if isinstance(t[field], (list, tuple)) else []
        choice = rng.randrange(4)
        if choice == 0 and dims:
            dims[rng.randrange(len(dims))] = rng.choice(INTERESTING + ODD_VALUES)
        elif choice == 1:
            dims.append(rng.choice(INTERESTING))
        elif choice == 2 and dims:
            dims.pop()
        else:
            t[field] = rng.choice([None, 3, "ab", [1] * 40, tuple(dims)])
            return f"{field}-type"
        t[field] = tuple(dims) if rng.random() < 0.8 else dims
        return f"{field}={str(t[field])[:30]}"
    if what == 3:
        t["storage_class"] = rng.choice(list(ITEMSIZE) + ["ComplexFloatStorage", "QUInt8Storage"])
        return f"class={t['storage_class']}"
    if what == 4:
        t["numel"] = rng.choice(INTERESTING + ODD_VALUES)
        return "numel"
    if what == 5:
        key = t["key"] if t["key"] in storages else rng.choice(list(storages))
        raw = storages[key][1]
        if rng.random() < 0.6:
            storages[key][1] = raw[:rng.randrange(len(raw) + 1)]
        else:
            storages[key][1] = raw + b"\x00" * rng.choice([1, 4, 64])
        return "storage-bytes"
    if what == 6:
        t["v3_dtype"] = rng.choice(list(REF_DTYPES) + ["complex64", "float8_e4m3fn"])
        return f"v3={t['v3_dtype']}"
    if what == 7:
        t["key"] = rng.choice(["9", "", "../0", "0" * 300, 7, None])
        return "key"
    if what == 8:
        t["fn"] = rng.choice(["_rebuild_tensor", "_rebuild_tensor_v3", "_rebuild_qtensor", "_rebuild_parameter"])
        return f"fn={t['fn']}"
    if what == 9:
        t["pid_extra"] = rng.choice([(None,), (("v", 0, 3),), (("v", 2, 2**40),), ("x",), (None, None),
                                     ((t["key"], 1, 2),)])
        return "pid-extra"
    if what == 10:  # a crafted geometry: big view over a small storage, or a huge broadcast
        t.update(offset=rng.choice([0, 3]), size=rng.choice([(1000,), (10, 10), (2**20, 2**20), (4,)]),
                 stride=rng.choice([(1,), (0, 0), (0,), (2**40,), (3, 1)]))
        return f"geometry {t['size']}/{t['stride']}"
    t["size"], t["stride"] = t["stride"], t["size"]
    return "swap size/stride"


def zip_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def rezip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, raw in members:
            zf.writestr(name, raw)
    return buf.getvalue()


def zip_member_edit(rng, data):
    members = zip_members(data)
    pkl_i = next(i for i, (n, _) in enumerate(members) if n.endswith("data.pkl"))
    kind = rng.randrange(5)
    if kind <= 1:
        label, pkl = pickle_edit(rng, members[pkl_i][1])
        members[pkl_i] = (members[pkl_i][0], pkl)
        return f"pkl-{label}", rezip(members)
    if kind == 2:
        label, pkl = byte_edit(rng, members[pkl_i][1])
        members[pkl_i] = (members[pkl_i][0], pkl)
        return f"pkl-{label}", rezip(members)
    storage = [i for i, (n, _) in enumerate(members) if "/data/" in n]
    i = rng.choice(storage)
    if kind == 3:
        del members[i]
        return "drop-storage", rezip(members)
    raw = members[i][1]
    members[i] = (members[i][0], raw[:rng.randrange(len(raw) + 1)] if rng.random() < 0.7 else raw + b"\x01" * 8)
    return "resize-storage", rezip(members)


def pickle_spans(data, count):
    """(start, end) of the first ``count`` pickles in a legacy file."""
    spans, pos = [], 0
    for _ in range(count):
        end = pos
        for op, _, p in pickletools.genops(data[pos:]):
            end = pos + p + 1
            if op.name == "STOP":
                break
        spans.append((pos, end))
        pos = end
    return spans


def legacy_edit(rng, data):
    spans = pickle_spans(data, 5)
    kind = rng.randrange(4)
    if kind <= 1:  # the object pickle
        a, b = spans[3]
        label, pkl = pickle_edit(rng, data[a:b])
        return f"obj-{label}", data[:a] + pkl + data[b:]
    if kind == 2:  # the key list or a header record
        a, b = spans[rng.choice([1, 2, 4])]
        label, part = byte_edit(rng, data[a:b], 2, max(3, b - a - 1))
        return f"record-{label}", data[:a] + part + data[b:]
    a = spans[4][1]  # the first storage's count header
    count = struct.unpack_from("<q", data, a)[0]
    new = rng.choice([count + 1, count - 1, 0, -1, 2**62, count * 2])
    return "count", data[:a] + struct.pack("<q", new) + data[a + 8:]


def torch_mutants(fmt, rng, count):
    with open(TORCH_SEEDS[fmt], "rb") as f:
        real = f.read()
    synthetic = spec_files(*synthetic_spec(rng), fmt, wrap=True)
    out = [("seed-real", real), ("seed-synthetic", synthetic)]
    while len(out) < count:
        roll = rng.random()
        if roll < 0.4:
            storages, tensors = synthetic_spec(rng)
            label = mutate_spec(rng, storages, tensors)
            if rng.random() < 0.3:
                label += "+" + mutate_spec(rng, storages, tensors)
            kw = {}
            if fmt == "legacy" and rng.random() < 0.2:
                keys = list(storages)
                kw["keys"] = rng.choice([keys[:-1], keys + ["zz"], ["0", "0"], keys[::-1]])
                label += "+keys"
            out.append((f"spec:{label}", spec_files(storages, tensors, fmt, wrap=rng.random() < 0.5, **kw)))
        elif roll < 0.7:
            seed = real if rng.random() < 0.5 else synthetic
            label, data = zip_member_edit(rng, seed) if fmt == "zip" else legacy_edit(rng, seed)
            out.append((f"struct:{label}", data))
        else:
            seed = real if rng.random() < 0.5 else synthetic
            label, data = byte_edit(rng, seed)
            out.append((f"bytes:{label}", data))
    return out


def st_parts(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_build(header, body, header_len=None, raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + body


def st_edit(rng, data):
    header, body = st_parts(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    info = header[name]
    what = rng.randrange(10)
    if what == 0:
        info["dtype"] = rng.choice(list(ST_NUMPY) + ["F8_E4M3", "C64", "f32", 5, None])
        label = f"dtype={info['dtype']}"
    elif what == 1:
        shape = list(info["shape"])
        op = rng.randrange(3)
        if op == 0 and shape:
            shape[rng.randrange(len(shape))] = rng.choice(INTERESTING + [1.0, True, "2", None])
        elif op == 1:
            shape.append(rng.choice(INTERESTING))
        elif shape:
            shape.pop()
        info["shape"] = shape
        label = f"shape={str(shape)[:30]}"
    elif what == 2:
        begin, end = info["data_offsets"]
        other = header[rng.choice(names)]["data_offsets"]
        info["data_offsets"] = rng.choice([[end, begin], [begin, end + 4], [begin - 4, end - 4], other,
                                           [begin + 2, end + 2], [begin, len(body) + 1], [-4, end],
                                           [begin, 2**64], [begin], [begin, end, 0], "0-4", [0.0, 4.0]])
        label = f"offsets={str(info['data_offsets'])[:30]}"
    elif what == 3:
        n = len(json.dumps(header, separators=(",", ":")))
        return "header-len", st_build(header, body, rng.choice([n - 1, n + 1, n + 8, 2**63, 0, 7, 2**40]))
    elif what == 4:
        text = json.dumps(header, separators=(",", ":")).encode()
        dup = json.dumps({name: info}, separators=(",", ":"))[1:-1].encode()
        return "dup-name", st_build(None, body, raw_header=text[:-1] + b"," + dup + b"}")
    elif what == 5:
        header["__metadata__"] = rng.choice([{"a": 1}, [1], "x", None, {"k": "v"}])
        label = "metadata"
    elif what == 6:
        header = rng.choice([[], "x", 3, {name: 5}, {name: {"dtype": "F32"}}, {"a": {"b": [[[[[[1]]]]]]}}])
        label = "not-an-object"
    elif what == 7:
        return "deep-json", st_build(None, body, raw_header=b"[" * 100000 + b"]" * 100000)
    elif what == 8:
        return "trailing", st_build(header, body + b"\x00" * rng.choice([1, 4, 100]))
    else:
        a = 8 + len(json.dumps(header, separators=(",", ":")))
        label, out = byte_edit(rng, st_build(header, body), 0, a)
        return f"header-{label}", out
    return label, st_build(header, body)


def st_mutants(rng, count):
    with open(os.path.join(SEEDS, "seed.safetensors"), "rb") as f:
        seed = f.read()
    header, body = st_parts(seed)
    bf16 = dict(header)
    bf16["bf"] = {"dtype": "BF16", "shape": [2], "data_offsets": [len(body), len(body) + 4]}
    seed_bf16 = st_build(bf16, body + bytes([0xC0, 0x3F, 0x10, 0xC0]))
    out = [("seed", seed), ("seed-bf16", seed_bf16)]
    while len(out) < count:
        base = seed if rng.random() < 0.7 else seed_bf16
        if rng.random() < 0.65:
            label, data = st_edit(rng, base)
            if rng.random() < 0.2:
                more, data2 = st_edit(rng, data) if data[8:9] == b"{" and _json_ok(data) else ("", data)
                label, data = label + "+" + more, data2
            out.append((f"header:{label}", data))
        else:
            label, data = byte_edit(rng, base)
            out.append((f"bytes:{label}", data))
    return out


def _json_ok(data):
    try:
        header, _ = st_parts(data)
        return isinstance(header, dict) and any(k != "__metadata__" and isinstance(v, dict) and
                                                "data_offsets" in v for k, v in header.items())
    except Exception:  # a mutant that is already not JSON gets no second header edit
        return False


def ckpt_edit(rng, entries):
    """Re-encode the seed's values with one hostile change; returns (label, bytes)."""
    entries = [list(e[:4]) for e in entries]
    i = rng.randrange(len(entries))
    tag, dims, kind, content = entries[i]
    what = rng.randrange(11)
    label = ""
    if what == 0:
        dims = list(dims) or [1]
        dims[rng.randrange(len(dims))] = rng.choice(INTERESTING[:25] + [-1, -5, 2**63 - 1])
        label = "dim"
    elif what == 1:
        dims = list(dims) + [rng.choice([0, 1, 2, 7])] if rng.random() < 0.5 else list(dims)[:-1]
        label = "ndim"
    elif what == 2:
        kind = rng.choice(list(MS_NUMPY) + ["str", "Int4", "Float8", "", "float32"])
        label = f"type={kind}"
    elif what == 3:
        if rng.random() < 0.6:
            content = content[:rng.randrange(len(content) + 1)]
        else:
            content = content + b"\x00" * rng.choice([1, 2, 4])
        label = "content-size"
    elif what == 4 and len(content) >= 2:  # split into two consecutive slices (as for >512 MiB)
        cut = rng.randrange(1, len(content))
        chunks = [pb_value(t, d, k, c) for t, d, k, c in entries[:i]]
        chunks += [pb_value(tag, dims, kind, content[:cut]), pb_value(tag, dims, kind, content[cut:])]
        chunks += [pb_value(t, d, k, c) for t, d, k, c in entries[i + 1:]]
        return "slices", b"".join(chunks)
    elif what == 5:
        entries.append(list(entries[rng.randrange(len(entries))]))
        label = "duplicate-tag"
    elif what == 6:  # raw fields: missing, repeated, wrong wire type, map tensor, unknown field
        field = rng.choice([b"", _field(3, 2, b""), _field(1, 0, b"\x05"), _field(2, 0, b"\x01"),
                            _field(1, 2, b"\xff\xfe"), _field(9, 2, b"xyz"), _field(2, 2, b"\x12\x07Float32")])
        value = rng.choice([_field(1, 2, tag.encode()) + field, field + _field(2, 2, pb_tensor(dims, kind, content)),
                            _field(1, 2, tag.encode()) + _field(2, 2, pb_tensor(dims, kind, content) + field)])
        entries[i] = None
        chunks = [pb_value(*e) if e else _field(1, 2, value) for e in entries]
        return "raw-field", b"".join(chunks)
    elif what == 7:
        data = b"".join(pb_value(*e, packed=(j == i)) for j, e in enumerate(entries))
        return "packed-dims", data
    elif what == 8:
        data = b"".join(pb_value(*e) for e in entries)
        crc = rng.choice([0, 1, 12345, 2**32 - 1])
        return "crc", data + b"crc_num" + crc.to_bytes(10, "big")
    elif what == 9:
        tag = rng.choice(["", "x" * 1000, "w\u00e9", entries[0][0]])
        label = "tag"
    else:
        extra = ["extra", [2, 2], "Float32", b"\x00" * rng.choice([0, 8, 16, 20])]
        entries.insert(rng.randrange(len(entries) + 1), extra)
        label = "extra-entry"
    entries[i] = [tag, dims, kind, content]
    return label, b"".join(pb_value(*e) for e in entries)


def ckpt_mutants(rng, count):
    seeds = []
    for name in ("seed.ckpt", "seed_crc.ckpt"):
        with open(os.path.join(SEEDS, name), "rb") as f:
            seeds.append(f.read())
    entries = ckpt_entries(seeds[0])
    rebuilt = b"".join(pb_value(t, d, k, c) for t, d, k, c, _ in entries)
    assert rebuilt == seeds[0], "the protobuf emitter no longer reproduces MindSpore's bytes"
    out = [("seed", seeds[0]), ("seed-crc", seeds[1])]
    while len(out) < count:
        if rng.random() < 0.6:
            label, data = ckpt_edit(rng, entries)
            out.append((f"struct:{label}", data))
        else:
            label, data = byte_edit(rng, seeds[rng.randrange(2)])
            out.append((f"bytes:{label}", data))
    return out


def mutants(fmt, count, seed):
    rng = random.Random(seed)
    if fmt in ("zip", "legacy"):
        return torch_mutants(fmt, rng, count)
    if fmt == "safetensors":
        return st_mutants(rng, count)
    return ckpt_mutants(rng, count)


# ============================================================== the worker
FAILURES = {"bad-message", "wrong-exception", "loaded-but-reference-rejects", "mismatch", "hang", "crash",
            "no-result", "worker-error"}


def run(fmt, count, seed, keep_dir=None):
    start = time.monotonic()
    import ldm.convert.readers  # noqa: F401  (imported once, before forking)
    verdicts, failures, examples = Counter(), [], Counter()
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{fmt}-") as tmp:
        for i, (label, data) in enumerate(mutants(fmt, count, seed)):
            path = os.path.join(tmp, f"m{i:04d}{EXT[fmt]}")
            with open(path, "wb") as f:
                f.write(data)
            result = run_guarded(fmt, path)
            verdicts[result["verdict"]] += 1
            if result["verdict"] in FAILURES:
                failures.append({"mutant": i, "label": label, **result})
                if keep_dir:
                    os.makedirs(keep_dir, exist_ok=True)
                    shutil.copy(path, os.path.join(keep_dir, os.path.basename(path)))
            elif result["verdict"] == "rejected":
                examples[result["msg"].split(": ", 1)[-1][:50]] += 1
            os.remove(path)
    return {"format": fmt, "count": sum(verdicts.values()), "verdicts": dict(verdicts), "failures": failures[:30],
            "seconds": round(time.monotonic() - start, 2), "mindspore_imported": "mindspore" in sys.modules,
            "torch_imported": "torch" in sys.modules, "messages": examples.most_common()}


if __name__ == "__main__":
    fmt, count, seed, out_json = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    summary = run(fmt, count, seed, sys.argv[5] if len(sys.argv) > 5 else None)
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)
