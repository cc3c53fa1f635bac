"""Reading ``.safetensors`` weights for the evaluation backbones (Inception, CLIP): a damaged file is
one CheckpointError naming it, not safetensors' Rust exception and a traceback."""
from ldm.errors import CheckpointError


def read_safetensors(path):
    """name -> numpy array, as ``safetensors.numpy.load_file``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as .safetensors: {exc}") from exc
