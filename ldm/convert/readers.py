"""Read any supported weight file into a flat ``name -> numpy array`` dict, without torch.

Formats are sniffed from the first bytes, not the file extension:
* MindSpore ``.ckpt`` (protobuf; read with ``mindspore.load_checkpoint``);
* PyTorch ``torch.save`` files, zip or legacy (:mod:`ldm.convert.torch_pickle`, restricted unpickler);
* ``.safetensors`` (8-byte header length + JSON header + raw data; parsed here so that BF16 widens
  to float32 and a truncated file gives a clear message).
"""
import json
import os
import struct

import numpy as np

from ldm.convert.torch_pickle import flatten_state_dict, load_torch_file
from ldm.errors import CheckpointError

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def sniff_format(path):
    """'safetensors' | 'torch' | 'mindspore' for a weight file; CheckpointError when unknown."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file too short to be a checkpoint ({len(head)} bytes)")
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and header_len < os.path.getsize(path):
        return "safetensors"
    if head[:1] == b"\x0a":  # protobuf field 1 (Checkpoint.value), length-delimited
        return "mindspore"
    raise CheckpointError(f"{path}: unknown checkpoint format (not MindSpore .ckpt, torch or safetensors)")


def read_safetensors(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise CheckpointError(f"{path}: safetensors header runs past the end of the file (truncated?)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from exc
        data_start = 8 + header_len
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if data_start + end > size:
                raise CheckpointError(f"{path}: tensor {name} lies past the end of the file (truncated?)")
            f.seek(data_start + start)
            raw = f.read(end - start)
            out[name] = _safetensors_array(raw, info["dtype"], info["shape"], name, path)
    return out


def _safetensors_array(raw, dtype, shape, name, path):
    if dtype == "BF16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in SAFETENSORS_DTYPES:
        arr = np.frombuffer(raw, dtype=np.dtype(SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
    else:
        raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {dtype}")
    if arr.size != int(np.prod(shape)):
        raise CheckpointError(f"{path}: tensor {name} has {arr.size} values for shape {shape} (corrupt?)")
    return arr.reshape(shape).astype(arr.dtype.newbyteorder("="))


def read_mindspore(path):
    import mindspore as ms
    try:
        params = ms.load_checkpoint(path)
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError/TypeError on bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read MindSpore checkpoint ({first})"[:300]) from exc
    if not params:
        raise CheckpointError(f"{path}: MindSpore checkpoint holds no parameters")
    # text entries (the diffusion spec our training records) become 0-d str arrays
    return {name: np.array(p) if isinstance(p, str) else p.asnumpy() for name, p in params.items()}


def read_weight_file(path):
    """Flat dict of arrays from one file of any supported format."""
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return read_safetensors(path)
    if fmt == "torch":
        return flatten_state_dict(load_torch_file(path))
    return read_mindspore(path)


def write_safetensors(state, path, metadata=None):
    """Write ``state`` (name -> array) as .safetensors, atomically (temp file, then os.replace)."""
    from safetensors.numpy import save_file
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
