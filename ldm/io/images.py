"""Image conversions and atomic PNG writes for generated samples."""
import os

import numpy as np
from PIL import Image

from ldm.errors import UserError
from ldm.io.atomic import atomic_path

SIZE_MULTIPLE = 8   # SD's VAE downsamples by 8: W and H must be multiples of this
ASPECT_TOLERANCE = 0.01        # relative difference of W/H below which two sizes count as one aspect ratio


def same_aspect(size_a, size_b, tolerance=ASPECT_TOLERANCE):
    """Whether (w, h) sizes have one aspect ratio, within ``tolerance`` (relative): the rule by which a
    control image or mask of another size is resized (same aspect) or refused (another aspect)."""
    (wa, ha), (wb, hb) = size_a, size_b
    return abs(wa * hb - wb * ha) <= tolerance * wb * ha


def check_image_size(width, height, multiple=SIZE_MULTIPLE):
    """Refuse a width/height the latent grid cannot represent (one clear line)."""
    for name, v in (("width", width), ("height", height)):
        if int(v) <= 0 or int(v) % multiple:
            raise UserError(f"{name} must be a positive multiple of {multiple}, got {v}")


def to_uint8(images):
    """Decoder output in ~[-1, 1], (N, 3, H, W) float -> (N, H, W, 3) uint8, rounded as diffusers does."""
    images = np.asarray(images, dtype=np.float32)
    images = np.clip(images / 2.0 + 0.5, 0.0, 1.0)
    return np.round(images.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


def from_uint8(images):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] (the VAE encoder's input range)."""
    images = np.asarray(images, dtype=np.float32) / 127.5 - 1.0
    return images.transpose(0, 3, 1, 2)


def load_image(path, width=None, height=None):
    """Read an RGB image, resized to (width, height) with Lanczos (None: kept); -> (H, W, 3) uint8.
    A file PIL cannot decode (not an image, truncated, a decompression bomb) is one UserError naming it."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")           # decodes every pixel: a truncated file fails here
            if width is not None and img.size != (width, height):
                img = img.resize((width, height), Image.LANCZOS)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, OSError) and getattr(exc, "filename", None) and not os.path.isfile(path):
            raise
        raise UserError(f"image {path} cannot be decoded: {exc}") from exc


def save_png_atomic(array, path):
    """Write a PNG through a temporary file + rename, so a crash never leaves a half-written image."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="PNG")


def make_grid(images, ncols, pad=2):
    """Tile (N, H, W, 3) uint8 images into one image, ``ncols`` per row, with a white border."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = img
    return grid
