"""Image folders -> arrays, with the exact resizing each metric's reference uses.

* FID (pytorch-fid): RGB, ``ToTensor`` ([0, 1] floats, CHW), then ``F.interpolate(size=299,
  mode="bilinear", align_corners=False)`` without antialiasing: :func:`resize_bilinear` builds the
  same interpolation weights (same float32 source-index formula) as separable matrices.
* CLIP: shortest side -> crop size with PIL bicubic, center crop, /255, CLIP mean/std
  (OpenAI's ``clip.load`` preprocess and Hugging Face's PIL ``CLIPImageProcessor``).
"""
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ldm.errors import UserError

# the extensions pytorch-fid accepts
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def list_images(folder):
    """Sorted image paths in ``folder`` (not recursive). Missing/empty folder -> UserError."""
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder)
                   if n.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and not n.startswith("."))
    if not names:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return [os.path.join(folder, n) for n in names]


def open_rgb(path):
    """PIL RGB image; a file PIL cannot decode -> UserError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def check_headers(paths):
    """Open each file's header only (cheap): unreadable files fail before any model loads."""
    for path in paths:
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"cannot read image {path}: {exc}") from exc


def to_unit_chw(img):
    """PIL RGB -> float32 (3, H, W) in [0, 1] (torchvision's ToTensor)."""
    return (np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0).transpose(2, 0, 1)


def _bilinear_matrix(in_size, out_size):
    """(out, in) weights of torch's bilinear, align_corners=False, no antialias.

    torch computes the source index ``scale * (dst + 0.5) - 0.5`` with a float32 scale and a fused
    multiply-add (one rounding to float32); the float64 expression rounded once reproduces it bit
    for bit (plain float32 arithmetic differs by one ulp at some indices).
    """
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    dst = np.arange(out_size, dtype=np.float64)
    src = (scale * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    lam1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    lam0 = np.float32(1.0) - lam1
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, i0), lam0)
    np.add.at(mat, (rows, i1), lam1)
    return mat


def resize_bilinear(images, out_h, out_w):
    """float32 (N, C, H, W) -> (N, C, out_h, out_w), equal to torch ``F.interpolate(..., mode="bilinear",
    align_corners=False)``. Returns the input unchanged when the size already matches."""
    n, c, h, w = images.shape
    if (h, w) == (out_h, out_w):
        return images
    wy = _bilinear_matrix(h, out_h)
    wx = _bilinear_matrix(w, out_w)
    return np.einsum("oh,nchw,pw->ncop", wy, images, wx, optimize=True).astype(np.float32)


def load_unit_images(paths):
    """Paths -> list of float32 (3, H, W) arrays in [0, 1]."""
    return [to_unit_chw(open_rgb(p)) for p in paths]


def clip_preprocess(img, size=224, mean=CLIP_MEAN, std=CLIP_STD):
    """PIL image -> float32 (3, size, size): shortest side to ``size`` (bicubic), center crop, normalise."""
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1).astype(np.float32)
