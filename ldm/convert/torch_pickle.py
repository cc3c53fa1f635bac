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
"""
import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from ldm.errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# storage class name -> numpy dtype ("bfloat16" is widened to float32 on read)
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# torch.dtype name (as pickled by _rebuild_tensor_v3 / UntypedStorage) -> storage class name
TORCH_DTYPE_NAMES = {
    "float32": "FloatStorage", "float": "FloatStorage", "float64": "DoubleStorage",
    "double": "DoubleStorage", "float16": "HalfStorage", "half": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "long": "LongStorage",
    "int32": "IntStorage", "int": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage",
}


class StorageType:
    """Stands for ``torch.FloatStorage`` etc. inside the pickle: it only carries the dtype."""

    def __init__(self, name):
        self.name = name


class TorchDtype:
    """Stands for a pickled ``torch.float32`` etc."""

    def __init__(self, name):
        self.name = name


class InertObject:
    """Placeholder for training-state objects (Lightning callbacks...): stores state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _inert_class(qualname):
    return type(qualname.rsplit(".", 1)[-1], (InertObject,), {"qualname": qualname})


def _bf16_to_f32(raw):
    as_u16 = np.frombuffer(raw, dtype="<u2")
    return (as_u16.astype(np.uint32) << 16).view(np.float32)


def _storage_array(raw, storage_name):
    dtype = STORAGE_DTYPES.get(storage_name)
    if dtype is None:
        raise CheckpointError(f"unsupported tensor storage type {storage_name}")
    if dtype == "bfloat16":
        return _bf16_to_f32(raw)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    """Materialise a tensor view (offset/size/stride in elements) of a 1-D storage array."""
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[storage_offset], copy=True)
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * itemsize for s in stride))
    return np.array(view, copy=True)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype, *rest):
    """Untyped (byte) storage plus an explicit dtype: reinterpret the bytes first."""
    typed = _storage_array(storage.tobytes(), TORCH_DTYPE_NAMES[dtype.name])
    return _rebuild_tensor(typed, storage_offset, size, stride)


def _rebuild_parameter(data, *_unused):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _ordered_dict(*args):
    return OrderedDict(*args)


SAFE_GLOBALS = {
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
}
# Training-state classes seen in Stability/CompVis Lightning checkpoints: kept as inert placeholders.
INERT_PREFIXES = ("pytorch_lightning.", "lightning_fabric.", "lightning.", "torch.torch_version",
                  "omegaconf.", "typing.", "numpy.")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the names above; storages are fetched by ``load_storage``."""

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

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
            f"refusing to load global {qualname!r} from the checkpoint (not a tensor or container); "
            "the file may not be a plain weight file")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"unexpected persistent id in checkpoint: {pid!r}"[:200])
        return self._load_storage(pid)


def _storage_name(storage_type, pid):
    """Storage class name for a persistent id; UntypedStorage carries its dtype separately."""
    if isinstance(storage_type, StorageType) and storage_type.name != "UntypedStorage":
        return storage_type.name
    return "ByteStorage"


def _load_zip(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise CheckpointError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        root = pkl[0][: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        cache = {}

        def load_storage(pid):
            _, storage_type, key, _location, _numel = pid[:5]
            if key not in cache:
                try:
                    raw = zf.read(f"{root}data/{key}")
                except KeyError as exc:
                    raise CheckpointError(f"{path}: storage {key} is missing (truncated file?)") from exc
                cache[key] = _storage_array(raw, _storage_name(storage_type, pid))
            return cache[key]

        with zf.open(pkl[0]) as f:
            return RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(path):
    with open(path, "rb") as f:
        if _read_header_record(f) != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        _read_header_record(f)  # protocol version
        _read_header_record(f)  # sys info
        storages = {}

        def load_storage(pid):
            _, storage_type, key, _location, numel = pid[:5]
            if key not in storages:
                storages[key] = (_storage_name(storage_type, pid), numel)
            return _LazyStorage(key)

        obj = RestrictedUnpickler(f, load_storage).load()
        keys = _read_header_record(f)
        arrays = {}
        for key in keys:
            name, _ = storages[key]
            header = f.read(8)
            if len(header) < 8:
                raise CheckpointError(f"{path}: file ends before storage {key} (truncated?)")
            (count,) = struct.unpack("<q", header)
            itemsize = 2 if name == "BFloat16Storage" else np.dtype(STORAGE_DTYPES[name]).itemsize
            raw = f.read(count * itemsize)
            if len(raw) < count * itemsize:
                raise CheckpointError(f"{path}: file ends inside storage {key} (truncated?)")
            arrays[key] = _storage_array(raw, name)
    return _resolve_lazy(obj, arrays)


class _HeaderUnpickler(pickle.Unpickler):
    """Reads the plain header records (magic, version, sys info, key list): no globals at all."""

    def find_class(self, module, name):
        raise CheckpointError(f"unexpected global {module}.{name} in checkpoint header")


def _read_header_record(f):
    # a fresh unpickler per record: an unpickler may read ahead, so one must not be reused after
    # another has consumed the stream (torch does the same)
    return _HeaderUnpickler(f).load()


class _LazyStorage:
    """In the legacy format storages come after the object pickle; tensors wait for them."""

    def __init__(self, key):
        self.key = key


class _LazyTensor:
    def __init__(self, args):
        self.args = args


def _resolve_lazy(obj, arrays):
    if isinstance(obj, _LazyTensor):
        storage, *rest = obj.args
        return _rebuild_tensor(arrays[storage.key], *rest)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve_lazy(v, arrays)) for k, v in obj.items()) \
            if isinstance(obj, OrderedDict) else {k: _resolve_lazy(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_lazy(v, arrays) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve_lazy(v, arrays) for v in obj)
    return obj


def _lazy_aware(fn):
    """Wrap a rebuild function so it defers when its storage has not been read yet (legacy)."""

    def wrapper(storage, *args):
        if isinstance(storage, _LazyStorage):
            return _LazyTensor((storage,) + args)
        return fn(storage, *args)

    return wrapper


SAFE_GLOBALS[("torch._utils", "_rebuild_tensor")] = _lazy_aware(_rebuild_tensor)
SAFE_GLOBALS[("torch._utils", "_rebuild_tensor_v2")] = _lazy_aware(_rebuild_tensor)


def load_torch_file(path):
    """Load a ``torch.save`` file (zip or legacy) and return its object with tensors as numpy arrays.

    Raises CheckpointError (one line, names the file) for anything that is not a readable file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    try:
        if head.startswith(b"PK"):
            return _load_zip(path)
        if head[:1] == b"\x80":
            return _load_legacy(path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, KeyError,
            struct.error, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({exc})"[:300]) from exc
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (unknown file header {head!r})")


def flatten_state_dict(obj):
    """Return the flat ``name -> ndarray`` dict inside a loaded checkpoint.

    Accepts a bare state dict or the usual wrappers (``state_dict``, ``model``, ``module``).
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, np.ndarray) for v in inner.values()):
                obj = inner
                break
        arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if arrays:
            return arrays
    raise CheckpointError("checkpoint holds no tensors (expected a state dict)")
