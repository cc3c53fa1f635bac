"""Canny edge detection (Canny 1986) with numpy and scipy only: the control maps of canny ControlNets.

Steps: optional Gaussian blur (``sigma`` > 0; the image is rounded back to 8 bits, as a blurred uint8 image
would be), 3x3 Sobel derivatives with replicated borders, gradient magnitude |gx| + |gy| (or gx^2 + gy^2 with
``l2=True`` and squared thresholds), non-maximum suppression along the gradient direction quantised to four
sectors (0, 45, 90, 135 degrees; boundaries at tan 22.5 = 0.4142 in 15-bit fixed point), double threshold
(candidate: magnitude > ``low``; strong: > ``high``), hysteresis (candidates 8-connected to a strong pixel are
kept). A colour image is handled per channel, each pixel taking the channel of largest magnitude.

These are the rules of OpenCV's ``cv2.Canny(image, low, high)`` (aperture 3, L1 gradient), which MindONE's and
lllyasviel's canny annotators call; cv2.Canny itself does not blur (sigma=0 here). The thresholds therefore mean
the same numbers (100 / 200 for the ControlNet annotators). Where a plateau of equal magnitudes lies across the
gradient, the pixel keeps its edge if it is strictly above the neighbour before it and not below the one after
(OpenCV's asymmetric test, which thins a two-pixel ridge to one). See docs/controlnet.md for the comparison.
"""
import numpy as np
from scipy import ndimage

TG22_Q15 = int(0.4142135623730950488 * (1 << 15) + 0.5)     # tan(22.5 deg) in 15-bit fixed point


def _sobel(channel):
    """int32 (gx, gy) of a 2-D uint8/int array, 3x3 Sobel, borders replicated."""
    p = np.pad(channel.astype(np.int32), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return gx, gy


def gradients(image, l2=False):
    """(magnitude int64, gx, gy) of an (H, W) or (H, W, C) uint8 image; per pixel the channel of largest
    magnitude (the first of equal ones)."""
    img = np.asarray(image)
    channels = img[..., None] if img.ndim == 2 else img
    gx, gy = zip(*(_sobel(channels[..., c]) for c in range(channels.shape[-1])))
    gx, gy = np.stack(gx).astype(np.int64), np.stack(gy).astype(np.int64)
    mag = gx * gx + gy * gy if l2 else np.abs(gx) + np.abs(gy)
    best = np.argmax(mag, axis=0)[None]
    pick = lambda a: np.take_along_axis(a, best, axis=0)[0]  # noqa: E731
    return pick(mag), pick(gx), pick(gy)


def non_maximum_suppression(mag, gx, gy):
    """bool (H, W): pixels whose magnitude is a local maximum along the quantised gradient direction."""
    m = np.pad(mag, 1)                     # magnitude 0 outside the image
    centre = m[1:-1, 1:-1]
    shifted = lambda dy, dx: m[1 + dy:m.shape[0] - 1 + dy, 1 + dx:m.shape[1] - 1 + dx]  # noqa: E731
    ax, ay = np.abs(gx), np.abs(gy) << 15
    tg22 = ax * TG22_Q15
    tg67 = tg22 + (ax << 16)
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg67)
    diagonal = ~horizontal & ~vertical
    same_sign = (gx ^ gy) >= 0             # gx * gy >= 0: the edge runs from top-right to bottom-left
    keep = np.zeros(mag.shape, dtype=bool)
    keep |= horizontal & (centre > shifted(0, -1)) & (centre >= shifted(0, 1))
    keep |= vertical & (centre > shifted(-1, 0)) & (centre >= shifted(1, 0))
    keep |= diagonal & same_sign & (centre > shifted(-1, -1)) & (centre > shifted(1, 1))
    keep |= diagonal & ~same_sign & (centre > shifted(-1, 1)) & (centre > shifted(1, -1))
    return keep


def hysteresis(candidates, strong):
    """bool (H, W): candidate pixels 8-connected (through candidates) to a strong one."""
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros(candidates.shape, dtype=bool)
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[strong & candidates])] = True
    keep[0] = False
    return keep[labels]


def canny(image, low=100, high=200, sigma=0.0, l2=False):
    """uint8 (H, W) edge map (255 = edge) of an (H, W) or (H, W, C) uint8 image."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"canny expects an (H, W) or (H, W, C) uint8 image, got {img.dtype} {img.shape}")
    low, high = float(low), float(high)
    if low > high:
        low, high = high, low
    if sigma > 0:
        blurred = ndimage.gaussian_filter(img.astype(np.float64), sigma=(sigma, sigma) + (0,) * (img.ndim - 2),
                                          mode="nearest")
        img = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    if l2:
        low, high = low * low, high * high
    mag, gx, gy = gradients(img, l2)
    peaks = non_maximum_suppression(mag, gx, gy)
    edges = hysteresis(peaks & (mag > np.floor(low)), peaks & (mag > np.floor(high)))
    return np.where(edges, 255, 0).astype(np.uint8)
