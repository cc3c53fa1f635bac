"""Spherical interpolation of Gaussian latents (DDIM paper sec. 5.4 interpolates x_T this way)."""
import numpy as np

from ldm.diffusion import xp


def slerp(x0, x1, alpha, dot_threshold=0.9995):
    """Great-circle interpolation between two latents (whole-tensor angle); falls back to linear
    interpolation when they are almost parallel. alpha in [0, 1]; numpy arrays or Tensors."""
    a, b = xp.to_numpy(x0).astype(np.float64), xp.to_numpy(x1).astype(np.float64)
    dot = float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    if abs(dot) > dot_threshold:
        w0, w1 = 1.0 - alpha, alpha
    else:
        theta = np.arccos(dot)
        w0 = np.sin((1.0 - alpha) * theta) / np.sin(theta)
        w1 = np.sin(alpha * theta) / np.sin(theta)
    return float(w0) * x0 + float(w1) * x1
