"""Read PyTorch weight files (``torch.save`` output) into numpy arrays without importing torch.

Two on-disk formats exist and both are handled:

* zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian file per storage
  (``<root>/data/<key>``);
* legacy pickle sequence (older files, e.g. pytorch-fid's 2019 Inception weights): magic number,
  protocol version, sys-info dict, the object pickle, the list of storage keys, then for each storage
  an int64 element count followed by its raw bytes.

The unpickler is restricted: only tensor-rebuild functions, storage types and a few harmless
containers resolve; Lightning training-state classes become inert placeholders; any other global is
refused. That is the security boundary against malicious checkpoints (pickle can call anything).

Memory safety: the rebuild functions only record (storage, offset, size, stride, dtype). Once the
whole pickle (and, for legacy files, every storage) is read, each tensor is checked with Python ints
(non-negative ints below 2**63, as many strides as dims, the highest reachable element inside its
storage, no absurd size for the file) before its bytes are copied, so a hostile offset or stride
is one CheckpointError line instead of a segfault or a read of foreign memory. The pure-Python
unpickler is used on purpose: the C one sizes its memo from the index a pickle names, so a 9-byte
pickle can make it allocate and clear gigabytes (measured: 4 GB, 21 s). The price, measured on a
3,000-tensor zip file (2026-12-01, 2 busy cores): 0.87 s to load instead of 0.13 s.
"""
import io
import lzma
import mmap
import os
import pickle
import reprlib
import struct
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from ldm.errors import CheckpointError
from ldm.io.raw_tensors import BF16, BOOL, MAX_DIMS, finish, is_count, numel, raw_dtype

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# storage class name -> raw element kind ("bfloat16" is widened to float32 on read)
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": BF16,
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": BOOL,
}
# torch.dtype name (as pickled by _rebuild_tensor_v3 / UntypedStorage) -> storage class name
TORCH_DTYPE_NAMES = {
    "float32": "FloatStorage", "float": "FloatStorage", "float64": "DoubleStorage",
    "double": "DoubleStorage", "float16": "HalfStorage", "half": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "long": "LongStorage",
    "int32": "IntStorage", "int": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage",
}
# a deflated zip member may claim at most this many bytes per stored byte (deflate's limit is ~1032:1)
MAX_INFLATION = 1100
# Views may repeat their storage's elements (stride 0, overlapping strides): tests/fixtures/eval's FID
# weights cut 95 MB of tensors from one 1 MB storage, and torch loads that. What is refused is a file
# asking for far more than that (a 600-byte file wanting terabytes through a stride-0 view): one
# tensor may need at most VIEW_RATIO x the file size + VIEW_SLACK bytes, all together TOTAL_RATIO x + TOTAL_SLACK.
VIEW_RATIO, VIEW_SLACK = 64, 64 << 20
TOTAL_RATIO, TOTAL_SLACK = 256, 256 << 20
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 60, 60, 3


class _Frozen:
    """Objects the pickle can reach must not be re-stated by its BUILD opcode."""
    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError("the pickle tries to change the state of a tensor helper")


class StorageType(_Frozen):
    """Stands for ``torch.FloatStorage`` etc. inside the pickle: it only carries the dtype."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class TorchDtype(_Frozen):
    """Stands for a pickled ``torch.float32`` etc."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class Storage(_Frozen):
    """One storage: its key, element kind and raw bytes (``None`` until a legacy file reaches them)."""
    __slots__ = ("key", "kind", "numel", "raw")

    def __init__(self, key, kind, count, raw=None):
        self.key, self.kind, self.numel, self.raw = key, kind, count, raw


class TensorRef(_Frozen):
    """What a rebuild call returns: the view to cut from a storage, checked and copied later."""
    __slots__ = ("storage", "offset", "size", "stride", "kind")
    __hash__ = None  # keeps refs out of sets and dict keys, where they could not be replaced

    def __init__(self, storage, offset, size, stride, kind=None):
        self.storage, self.offset, self.size, self.stride, self.kind = storage, offset, size, stride, kind


class _Global(_Frozen):
    """A safe callable handed to the pickle (wrapped, so BUILD cannot touch the function itself)."""
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class InertObject:
    """Placeholder for training-state objects (Lightning callbacks...): stores state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _inert_class(qualname):
    return type(qualname.rsplit(".", 1)[-1], (InertObject,), {"qualname": qualname})


def _storage_array(raw, storage_name):
    """1-D array of a whole storage (used by eval/torchscript.py's own storage loader)."""
    kind = STORAGE_DTYPES.get(storage_name)
    if kind is None:
        raise CheckpointError(f"unsupported tensor storage type {storage_name}")
    itemsize = raw_dtype(kind).itemsize
    return finish(np.frombuffer(raw, dtype=raw_dtype(kind), count=len(raw) // itemsize), kind)


def _storage_name(storage_type, pid):
    """Storage class name for a persistent id (eval/torchscript.py); UntypedStorage holds bytes."""
    if isinstance(storage_type, StorageType) and storage_type.name != "UntypedStorage":
        return storage_type.name
    return "ByteStorage"


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, *rest):
    """Untyped (byte) storage plus an explicit dtype: the offset counts elements of that dtype."""
    if not isinstance(dtype, TorchDtype):
        raise CheckpointError(f"tensor dtype {_short.repr(dtype)} is not a torch dtype")
    return TensorRef(storage, storage_offset, size, stride, TORCH_DTYPE_NAMES[dtype.name])


def _rebuild_parameter(data, *_unused):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        raise CheckpointError("_rebuild_from_type_v2 is given something other than a tensor rebuild")
    return func(*args)


def _ordered_dict(*args):
    return OrderedDict(*args)


SAFE_GLOBALS = {key: _Global(fn) for key, fn in {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}.items()}
# Training-state classes seen in Stability/CompVis Lightning checkpoints: kept as inert placeholders.
INERT_PREFIXES = ("pytorch_lightning.", "lightning_fabric.", "lightning.", "torch.torch_version",
                  "omegaconf.", "typing.", "numpy.")


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the names above; storages are fetched by ``load_storage``.

    ``load()`` returns the object with every tensor checked and copied; ``load_raw()`` leaves
    :class:`TensorRef` placeholders (legacy files read their storages after the pickle).
    """

    def __init__(self, file, load_storage, path="checkpoint", file_size=None):
        super().__init__(file)
        self._load_storage = load_storage
        self._path, self._file_size = path, file_size

    def find_class(self, module, name):
        key = (module, name)
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "torch" and name in TORCH_DTYPE_NAMES:
            return TorchDtype(name)
        qualname = f"{module}.{name}"
        if qualname.startswith(INERT_PREFIXES):
            return _inert_class(qualname)
        raise CheckpointError(
            f"refusing to load global {_short.repr(qualname)} from the checkpoint (not a tensor or "
            "container); the file may not be a plain weight file")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise CheckpointError(f"unexpected persistent id in checkpoint: {_short.repr(pid)}")
        storage = self._load_storage(pid)
        if isinstance(storage, np.ndarray):  # eval/torchscript.py hands back whole-storage arrays
            storage = _array_storage(storage)
        return storage

    def load_raw(self):
        return super().load()

    def load(self):
        return materialise(self.load_raw(), self._path, self._file_size)


def _array_storage(arr):
    if arr.ndim != 1:
        raise CheckpointError("a storage must be one-dimensional")
    kind = BOOL if arr.dtype == np.bool_ else arr.dtype.newbyteorder("<").str
    return Storage("?", kind, arr.size, np.ascontiguousarray(arr).tobytes())


def _storage_kind(storage_type, key):
    """Element kind of a persistent id; UntypedStorage is bytes (its dtype comes with the tensor)."""
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"storage {_short.repr(key)} has no storage type")
    name = "ByteStorage" if storage_type.name == "UntypedStorage" else storage_type.name
    kind = STORAGE_DTYPES.get(name)
    if kind is None:
        raise CheckpointError(f"storage {_short.repr(key)} has unsupported type {_short.repr(name)}")
    return kind


def _parse_pid(pid):
    """(key, kind, numel, view) of a persistent id, each checked; view is None or (key, offset, numel)."""
    _, storage_type, key, _location, count = pid[:5]
    view = pid[5] if len(pid) == 6 else None
    if type(key) is not str or not 0 < len(key) <= 200:
        raise CheckpointError(f"storage key {_short.repr(key)} is not a short string")
    kind = _storage_kind(storage_type, key)
    if not is_count(count):
        raise CheckpointError(f"storage {key!r} has an invalid size {_short.repr(count)}")
    if view is not None:
        if not (isinstance(view, tuple) and len(view) == 3 and type(view[0]) is str
                and is_count(view[1]) and is_count(view[2])):
            raise CheckpointError(f"storage {key!r} has an invalid view {_short.repr(view)}")
        if view[1] + view[2] > count:
            raise CheckpointError(f"storage view {view[0]!r} runs past storage {key!r} "
                                  f"(elements {view[1]}-{view[1] + view[2]} of {count})")
    return key, kind, count, view


# ------------------------------------------------------------------------ checking and copying tensors
def _tensor_array(path, name, ref, file_size):
    storage = ref.storage
    if not isinstance(storage, Storage) or storage.raw is None:
        raise CheckpointError(f"{path}: tensor {name} has no storage")
    kind = storage.kind if ref.kind is None else STORAGE_DTYPES[ref.kind]
    dtype = raw_dtype(kind)
    itemsize = dtype.itemsize
    size, stride, offset = ref.size, ref.stride, ref.offset
    if not is_count(offset):
        raise CheckpointError(f"{path}: tensor {name} has an invalid storage offset {_short.repr(offset)}")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise CheckpointError(f"{path}: tensor {name} has no shape/stride tuples")
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise CheckpointError(f"{path}: tensor {name} has {len(size)} dims and {len(stride)} strides "
                              f"(they must agree, at most {MAX_DIMS})")
    if not all(is_count(n) for n in size):
        raise CheckpointError(f"{path}: tensor {name} has an invalid shape {_short.repr(size)}")
    if not all(is_count(s) for s in stride):
        raise CheckpointError(f"{path}: tensor {name} has a negative or invalid stride {_short.repr(stride)}")
    size, stride = tuple(size), tuple(stride)
    available = len(storage.raw)
    count = numel(size)
    if count == 0:
        if offset * itemsize > available:
            raise CheckpointError(f"{path}: tensor {name} starts at element {offset}, past the end of "
                                  f"storage {storage.key!r} ({available} bytes)")
        return finish(np.empty(size, dtype=dtype), kind)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    need = (last + 1) * itemsize
    if need > available:
        raise CheckpointError(f"{path}: tensor {name} needs {need} bytes from storage {storage.key!r} "
                              f"which has {available}")
    if count * itemsize > VIEW_RATIO * file_size + VIEW_SLACK:
        raise CheckpointError(f"{path}: tensor {name} of shape {size} needs {count * itemsize} bytes, "
                              f"absurd for a {file_size}-byte file")
    base = np.frombuffer(storage.raw, dtype=dtype, count=last - offset + 1, offset=offset * itemsize)
    # a dim of size 1 never moves: its stride (however large) is not needed and must not overflow numpy
    strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(size, stride))
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=strides, writeable=False)
    return finish(np.array(view), kind)


def materialise(obj, path, file_size=None):
    """``obj`` with every TensorRef replaced by its checked copy (containers are edited in place)."""
    walker = _Walker(path, file_size)
    try:
        return walker.walk(obj, None)
    except RecursionError:
        raise CheckpointError(f"{path}: the checkpoint's objects are nested too deeply") from None


class _Walker:
    def __init__(self, path, file_size):
        self.path, self.memo, self.total = path, {}, 0
        self.file_size = file_size

    def _name(self, parent, key):
        label = key if isinstance(key, str) else _short.repr(key)
        return label if parent is None else f"{parent}.{label}"

    def walk(self, obj, name):
        if not isinstance(obj, (TensorRef, dict, list, tuple, InertObject)):
            return obj
        hit = self.memo.get(id(obj))
        if hit is not None:
            return hit[1]
        if isinstance(obj, TensorRef):
            result = self._tensor(obj, name)
        elif isinstance(obj, tuple):
            result = tuple(self.walk(v, self._name(name, i)) for i, v in enumerate(obj))
        else:
            self.memo[id(obj)] = (obj, obj)  # containers first, so cycles end here
            if isinstance(obj, dict):
                for key, value in list(obj.items()):
                    obj[key] = self.walk(value, self._name(name, key))
            elif isinstance(obj, list):
                for i, value in enumerate(obj):
                    obj[i] = self.walk(value, self._name(name, i))
            else:
                for attr, value in list(vars(obj).items()):
                    setattr(obj, attr, self.walk(value, self._name(name, attr)))
            return obj
        self.memo[id(obj)] = (obj, result)
        return result

    def _tensor(self, ref, name):
        label = repr(name if name is not None else "?")
        storage = ref.storage
        file_size = self.file_size
        if file_size is None:  # no file to compare with (torchscript): its storages stand in
            file_size = len(storage.raw) if isinstance(storage, Storage) and storage.raw is not None else 0
        arr = _tensor_array(self.path, label if len(label) < 100 else label[:97] + "...'", ref, file_size)
        self.total += arr.nbytes
        if self.file_size is not None and self.total > TOTAL_RATIO * self.file_size + TOTAL_SLACK:
            raise CheckpointError(f"{self.path}: its tensors need {self.total}+ bytes, absurd for a "
                                  f"{self.file_size}-byte file")
        return arr


# ------------------------------------------------------------------------ zip format
def _read_member(zf, info, what):
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * info.compress_size + 1024:
        raise CheckpointError(f"{what} claims {info.file_size} bytes from {info.compress_size} compressed")
    raw = zf.read(info)
    if len(raw) != info.file_size:
        raise CheckpointError(f"{what} is truncated")
    return raw


def _load_zip(path, file_size):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkl:
            raise CheckpointError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        root = pkl[0][: -len("data.pkl")]
        if root + "byteorder" in names:
            order = _read_member(zf, zf.getinfo(root + "byteorder"), f"{path}: byteorder record")
            if order.strip() not in (b"little", b""):
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        cache = {}

        def load_storage(pid):
            key, kind, count, view = _parse_pid(pid)
            if view is not None:
                raise CheckpointError(f"{path}: storage {key!r} is a legacy view inside a zip checkpoint")
            if key in cache:
                if (cache[key].kind, cache[key].numel) != (kind, count):
                    raise CheckpointError(f"{path}: storage {key!r} is declared twice with different types")
                return cache[key]
            try:
                info = zf.getinfo(f"{root}data/{key}")
            except KeyError:
                raise CheckpointError(f"{path}: storage {key!r} is missing from the archive "
                                      "(truncated file?)") from None
            nbytes = count * raw_dtype(kind).itemsize
            if info.file_size != nbytes:
                raise CheckpointError(f"{path}: storage {key!r} should hold {nbytes} bytes but the archive "
                                      f"member has {info.file_size}")
            cache[key] = Storage(key, kind, count, _read_member(zf, info, f"{path}: storage {key!r}"))
            return cache[key]

        data = _read_member(zf, zf.getinfo(pkl[0]), f"{path}: data.pkl")
        return RestrictedUnpickler(io.BytesIO(data), load_storage, path, file_size).load()


# ------------------------------------------------------------------------ legacy format
class _HeaderUnpickler(pickle._Unpickler):
    """Reads the plain header records (magic, version, sys info, key list): no globals at all."""

    def find_class(self, module, name):
        raise CheckpointError(f"unexpected global {_short.repr(module)}.{_short.repr(name)} in the "
                              "checkpoint header")

    def persistent_load(self, pid):
        raise CheckpointError("unexpected persistent id in the checkpoint header")


def _read_header_record(f):
    # a fresh unpickler per record: an unpickler may read ahead, so one must not be reused after
    # another has consumed the stream (torch does the same)
    return _HeaderUnpickler(f).load()


def _load_legacy(path, file_size):
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as f:
        if _read_header_record(f) != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if _read_header_record(f) != LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy PyTorch protocol version")
        sys_info = _read_header_record(f)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        storages, views = {}, {}

        def load_storage(pid):
            key, kind, count, view = _parse_pid(pid)
            if key in storages:
                if (storages[key].kind, storages[key].numel) != (kind, count):
                    raise CheckpointError(f"{path}: storage {key!r} is declared twice with different types")
            else:
                storages[key] = Storage(key, kind, count)
            if view is None:
                return storages[key]
            view_key, start, length = view
            if view_key not in views:
                views[view_key] = (key, start, Storage(view_key, kind, length))
            elif views[view_key][:2] != (key, start) or views[view_key][2].numel != length:
                raise CheckpointError(f"{path}: storage view {view_key!r} is declared twice differently")
            return views[view_key][2]

        obj = RestrictedUnpickler(f, load_storage, path, file_size).load_raw()
        keys = _read_header_record(f)
        if not isinstance(keys, list) or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys):
            raise CheckpointError(f"{path}: the storage key list is not a list of distinct names")
        for key in keys:
            if key not in storages:
                raise CheckpointError(f"{path}: lists storage {key!r} that no tensor uses")
            storage = storages[key]
            header = f.read(8)
            if len(header) < 8:
                raise CheckpointError(f"{path}: file ends before storage {key!r} (truncated?)")
            (count,) = struct.unpack("<q", header)
            if count != storage.numel:
                raise CheckpointError(f"{path}: storage {key!r} records {count} elements, its tensors "
                                      f"expect {storage.numel}")
            nbytes = count * raw_dtype(storage.kind).itemsize
            raw = f.read(nbytes)
            if len(raw) < nbytes:
                raise CheckpointError(f"{path}: file ends inside storage {key!r} (truncated?)")
            storage.raw = raw
    for key, storage in storages.items():
        if storage.raw is None:
            raise CheckpointError(f"{path}: storage {key!r} is missing (truncated file?)")
    for root_key, start, view in views.values():
        itemsize = raw_dtype(view.kind).itemsize
        view.raw = storages[root_key].raw[start * itemsize:(start + view.numel) * itemsize]
    return materialise(obj, path, file_size)


# ------------------------------------------------------------------------ entry points
_CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, pickle.UnpicklingError, EOFError, ValueError,
            LookupError, struct.error, TypeError, AttributeError, OverflowError, NotImplementedError,
            RuntimeError)


def load_torch_file(path):
    """Load a ``torch.save`` file (zip or legacy) and return its object with tensors as numpy arrays.

    Raises CheckpointError (one line, names the file) for anything that is not a readable file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        file_size = os.path.getsize(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        if head.startswith(b"PK"):
            return _load_zip(path, file_size)
        if head[:1] == b"\x80":
            return _load_legacy(path, file_size)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(path) else f"{path}: {message}") from None
    except (*_CORRUPT, OSError) as exc:  # OSError: zipfile seeks to offsets a corrupt directory names
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({detail})") from None
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (unknown file header {head!r})")


def flatten_state_dict(obj, path="checkpoint"):
    """Return the flat ``name -> ndarray`` dict inside a loaded checkpoint.

    Accepts a bare state dict or the usual wrappers (``state_dict``, ``model``, ``module``).
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, np.ndarray) for v in inner.values()):
                obj = inner
                break
        arrays = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
        if arrays:
            return arrays
    raise CheckpointError(f"{path}: checkpoint holds no tensors (expected a state dict)")
