"""Read the weights of a TorchScript archive (``torch.jit.save``; OpenAI's CLIP ``ViT-*.pt`` files are
such archives) without torch, as a flat ``name -> ndarray`` state dict.

A TorchScript ``data.pkl`` pickles the module tree as objects of ``__torch__.*`` classes whose state
is a dict of attributes: tensors (parameters, buffers), sub-modules, and plain values. Those
classes become inert placeholders here (nothing of the archive's code runs); tensors are rebuilt by
the same restricted machinery as ordinary checkpoints (ldm.convert.torch_pickle). Walking the tree
gives the names ``torch.jit.load(...).state_dict()`` would give.
"""
import io
import pickle
import zipfile
import zlib

import numpy as np

from ldm.convert import torch_pickle as tp
from ldm.errors import CheckpointError


class ScriptObject(tp.InertObject):
    """A ``__torch__.*`` module: keeps its attribute dict, runs nothing."""

    def __setstate__(self, state):
        self.state = state


class _ScriptUnpickler(tp.RestrictedUnpickler):
    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptObject,), {"qualname": f"{module}.{name}"})
        if module == "torch.jit._pickle":  # list/tensor rebuild helpers of older archives
            if name.startswith("build_") or name == "restore_type_tag":
                return lambda value, *rest: value
        return super().find_class(module, name)


def is_torchscript(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") for n in zf.namelist()) and \
                any("/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _flatten(obj, prefix, out):
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            out[prefix + key] = value
        elif isinstance(value, ScriptObject):
            _flatten(value, prefix + key + ".", out)


def _read_member(zf, path, name, what):
    """Bytes of one archive member; a missing or damaged member is one CheckpointError naming the file,
    the member and what it holds (a KeyError / BadZipFile would otherwise escape as a traceback)."""
    try:
        return zf.read(name)
    except KeyError:
        raise CheckpointError(f"{path}: TorchScript archive is missing {name} ({what}); the file is incomplete "
                              "or damaged: download it again") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CheckpointError(f"{path}: TorchScript archive member {name} ({what}) is damaged ({exc}): "
                              "download the file again") from None


def load_torchscript_state_dict(path):
    """Flat state dict of every parameter and buffer in a TorchScript archive."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{path}: TorchScript archive without data.pkl (the module tree); the file is "
                                  "incomplete or damaged: download it again")
        root = pkl[0][: -len("data.pkl")]
        cache = {}

        def load_storage(pid):
            _, storage_type, key, _location, _numel = pid[:5]
            if key not in cache:
                raw = _read_member(zf, path, f"{root}data/{key}", f"storage record {key} of data.pkl")
                cache[key] = tp._storage_array(raw, tp._storage_name(storage_type, pid))
            return cache[key]

        data = _read_member(zf, path, pkl[0], "the module tree")
        try:
            obj = _ScriptUnpickler(io.BytesIO(data), load_storage, path=path).load()
        except (EOFError, pickle.UnpicklingError, ValueError, IndexError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:100]}" if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: {pkl[0]} (the module tree) is truncated or damaged ({why}): "
                                  "download the file again") from None
    out = {}
    _flatten(obj, "", out)
    if not out:
        raise CheckpointError(f"{path}: TorchScript archive holds no tensors")
    return out
