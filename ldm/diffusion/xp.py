"""The few array operations the samplers need beyond + - * /, for numpy arrays and MindSpore Tensors.

Sampler step math is written as linear combinations with Python-float coefficients, which both
numpy and MindSpore evaluate on their own device. Only the helpers below need to know which library
an array belongs to. Coefficients must be Python floats: a ``np.float64 * Tensor`` product silently
turns the Tensor into a numpy array (a host copy), so :func:`scalar` is used everywhere.
"""
import numpy as np


def is_mindspore(x):
    return type(x).__module__.startswith("mindspore")


def scalar(value):
    """A Python float (never a numpy scalar; see module docstring)."""
    return float(value)


def to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    if is_mindspore(x):
        return x.asnumpy()
    return np.asarray(x)


def like(array, reference):
    """numpy ``array`` converted to the library and dtype of ``reference``."""
    if is_mindspore(reference):
        import mindspore as ms
        return ms.Tensor(np.asarray(array), dtype=reference.dtype)
    return np.asarray(array, dtype=reference.dtype)


def concat(arrays, axis=0):
    if is_mindspore(arrays[0]):
        import mindspore as ms
        return ms.ops.cat(list(arrays), axis)
    return np.concatenate(arrays, axis=axis)


def split_half(x):
    """[2N, ...] -> ([N, ...], [N, ...]) along the batch axis."""
    n = x.shape[0] // 2
    return x[:n], x[n:]


def clip(x, low, high):
    return x.clip(low, high)


def dynamic_threshold(x0, ratio=0.995, max_value=1.0):
    """Imagen's dynamic thresholding: per sample s = quantile(|x0|, ratio) clamped to [1, max_value],
    then x0 is clipped to [-s, s] and divided by s. Quantile with linear interpolation (torch's)."""
    shape = x0.shape
    flat = x0.reshape((shape[0], -1))
    n = flat.shape[1]
    pos = ratio * (n - 1)
    lo, frac = int(np.floor(pos)), pos - np.floor(pos)
    hi = min(lo + 1, n - 1)
    if is_mindspore(x0):
        import mindspore as ms
        srt = ms.ops.sort(flat.abs(), axis=1)[0]
        s = srt[:, lo:lo + 1] * (1.0 - frac) + srt[:, hi:hi + 1] * frac
        s = s.clip(1.0, max_value)
        return (ms.ops.maximum(ms.ops.minimum(flat, s), -s) / s).reshape(shape)
    srt = np.sort(np.abs(flat), axis=1)
    s = (srt[:, lo:lo + 1] * (1.0 - frac) + srt[:, hi:hi + 1] * frac).clip(1.0, max_value)
    return (np.clip(flat, -s, s) / s).reshape(shape).astype(x0.dtype, copy=False)


def broadcast_to_sample(coef, x):
    """Per-sample coefficients [N] -> [N, 1, 1, ...] so they broadcast against x [N, ...]."""
    if isinstance(coef, (float, int)):
        return coef
    if len(coef.shape) == 1 and len(x.shape) > 1:
        return coef.reshape((-1,) + (1,) * (len(x.shape) - 1))
    return coef


def minimum(a, b):
    if is_mindspore(a) or is_mindspore(b):
        import mindspore as ms
        return ms.ops.minimum(a, b)
    return np.minimum(a, b)
