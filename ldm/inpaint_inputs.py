"""The image and mask of an inpainting run: read, fitted to the output size, the mask made binary.

Mask convention (diffusers', MindONE's, Stability's): white = repaint, black = keep. A mask file is read as
luma (PIL ``convert("L")``), scaled to [0, 1] and thresholded at 0.5: values from 128 up repaint, below keep
(diffusers' ``VaeImageProcessor(do_binarize=True)``; MindONE thresholds the same way, on the blue channel).

Sizes (``aug``, MindONE's ``--aug``):

* ``resize`` (default): the image (and mask) must have the output's aspect ratio (within 1%); one of
  another size is resized to it (Lanczos, the mask resized as gray values and thresholded after, as diffusers
  does) with a notice. A different aspect ratio is an error: MindONE stretched it silently.
* ``crop``: MindONE's crop of an output-sized window around the mask's centre (clipped to the image); the
  image must be at least that large.
* ``resizecrop``: MindONE's crop of a window around the mask whose extent is ``mask_ratio`` of the window
  (the window has the output's aspect ratio and is cut down to fit the image), then resized to the output size.
* ``none``: the image must already have the output size.

A mask of another size than its image is resized to it when the aspect ratios agree (a notice), else refused.
Only numpy and PIL: the CLI runs all of this before MindSpore is imported.
"""
import dataclasses
import logging
import math
import os

import numpy as np
from PIL import Image

from ldm.errors import UserError
from ldm.io.images import same_aspect

AUGS = ("resize", "crop", "resizecrop", "none")
MASK_THRESHOLD = 0.5           # mask / 255 >= this repaints


@dataclasses.dataclass
class InpaintInputs:
    image: np.ndarray              # uint8 (H, W, 3)
    mask: np.ndarray               # float32 (H, W): 1 = repaint, 0 = keep
    notes: list                    # (logging level, message): resized, cropped, all black, all white


def read_image(path, what="image"):
    """A file -> uint8 (H, W, 3) RGB; a missing, unreadable or undecodable file is one UserError naming it."""
    return _read(path, what, "RGB")


def read_mask(path):
    """A mask file -> uint8 (H, W) luma."""
    return _read(path, "mask", "L")


def _read(path, what, mode):
    if not os.path.exists(path):
        raise UserError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path}: not a regular file")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode), dtype=np.uint8)   # decodes every pixel: truncation fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{what} {path} cannot be decoded: {' '.join(str(exc).split())}") from exc


def binarize(mask):
    """uint8 (0..255), bool or float ([0, 1]) mask -> float32 with 1 where it repaints (value / 255 >= 0.5)."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    values = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    if not np.isfinite(values).all():
        raise UserError("the mask holds NaN or infinite values")
    return (values >= MASK_THRESHOLD).astype(np.float32)


def _resize(array, size):
    if array.shape[1::-1] == tuple(size):
        return array
    return np.asarray(Image.fromarray(array).resize(tuple(size), Image.LANCZOS), dtype=np.uint8)


def _size_text(size):
    return f"{size[0]}x{size[1]}"


def fit_mask(mask, image_size, notes, label="mask"):
    """The gray mask at the image's (width, height): resized with a notice when the aspect ratio agrees."""
    size = (mask.shape[1], mask.shape[0])
    if size == tuple(image_size):
        return mask
    if not same_aspect(size, image_size):
        raise UserError(f"the {label} is {_size_text(size)} but the image {_size_text(image_size)}: their aspect "
                        "ratios differ, so the mask cannot be placed on the image; give a mask of the image's size")
    notes.append((logging.INFO, f"the {label} ({_size_text(size)}) was resized to the image's "
                                f"{_size_text(image_size)}"))
    return _resize(mask, image_size)


def _mask_box(mask):
    """(centre x, centre y, extent x, extent y) of the repaint pixels (MindONE: mean position, max - min)."""
    rows, cols = np.nonzero(mask >= 255 * MASK_THRESHOLD)
    if rows.size == 0:
        h, w = mask.shape
        return w // 2, h // 2, 0, 0
    return int(cols.mean()), int(rows.mean()), int(cols.max() - cols.min()), int(rows.max() - rows.min())


def _crop(arrays, centre, window, image_size):
    """Crop every array to ``window`` (w, h) around ``centre``, the window kept inside the image."""
    (cx, cy), (ww, wh), (iw, ih) = centre, window, image_size
    left = min(max(cx - ww // 2, 0), iw - ww)
    top = min(max(cy - wh // 2, 0), ih - wh)
    return [a[top:top + wh, left:left + ww] for a in arrays]


def prepare(image, mask, width, height, aug="resize", mask_ratio=0.75):
    """Fit ``image`` (uint8 (H0, W0, 3)) and ``mask`` (uint8 (Hm, Wm) gray, or bool / float in [0, 1])
    to the output ``width`` x ``height`` as ``aug`` says (module docstring). Returns InpaintInputs."""
    if aug not in AUGS:
        raise UserError(f"unknown aug {aug!r}; use one of {', '.join(AUGS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"the image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UserError(f"the mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != np.uint8:
        mask = np.round(binarize(mask) * 255).astype(np.uint8)
    notes = []
    image_size, out = (image.shape[1], image.shape[0]), (int(width), int(height))
    mask = fit_mask(mask, image_size, notes)
    if aug == "none" and image_size != out:
        raise UserError(f"the image is {_size_text(image_size)}, the output {_size_text(out)}: with aug none they "
                        "must agree (or use aug resize)")
    if aug == "resize" and image_size != out:
        if not same_aspect(image_size, out):
            raise UserError(f"the image is {_size_text(image_size)} but the output {_size_text(out)}: their aspect "
                            "ratios differ; give --W/--H (or --img_size) of the image's aspect ratio, or --aug crop / "
                            "resizecrop to cut a window out of it")
        notes.append((logging.INFO, f"the image and mask ({_size_text(image_size)}) were resized to "
                                    f"{_size_text(out)} (same aspect ratio)"))
        image, mask = _resize(image, out), _resize(mask, out)
    elif aug == "crop":
        if image_size[0] < out[0] or image_size[1] < out[1]:
            raise UserError(f"aug crop: the image ({_size_text(image_size)}) is smaller than the output window "
                            f"{_size_text(out)}; use aug resize or resizecrop")
        cx, cy, _, _ = _mask_box(mask)
        image, mask = _crop([image, mask], (cx, cy), out, image_size)
        notes.append((logging.INFO, f"aug crop: a {_size_text(out)} window around the mask was cut out of the "
                                    f"{_size_text(image_size)} image"))
    elif aug == "resizecrop":
        if not 0.0 < float(mask_ratio) <= 1.0 or not math.isfinite(float(mask_ratio)):
            raise UserError(f"--mask_ratio must be in (0, 1], got {mask_ratio!r}")
        cx, cy, ex, ey = _mask_box(mask)
        scale = max(ex / out[0], ey / out[1], 1e-9) / float(mask_ratio)
        scale = min(scale, image_size[0] / out[0], image_size[1] / out[1])      # the window fits the image
        window = (max(1, int(round(out[0] * scale))), max(1, int(round(out[1] * scale))))
        image, mask = _crop([image, mask], (cx, cy), window, image_size)
        image, mask = _resize(np.ascontiguousarray(image), out), _resize(np.ascontiguousarray(mask), out)
        notes.append((logging.INFO, f"aug resizecrop: a {_size_text(window)} window around the mask was cut out "
                                    f"of the {_size_text(image_size)} image and resized to {_size_text(out)}"))
    binary = binarize(mask)
    if not binary.any():
        notes.append((logging.WARNING, "the mask is all black: nothing to inpaint (the model redraws the whole "
                                       "image, which it keeps)"))
    elif binary.all():
        notes.append((logging.WARNING, "the mask is all white: everything is repainted (at strength 1 the image is "
                                       "not used: text to image)"))
    return InpaintInputs(np.ascontiguousarray(image), binary, notes)


def full_mask(width, height):
    """Inputs that repaint everything: a black image and an all-white mask (text to image with an
    inpainting model, e.g. training's validation images)."""
    return InpaintInputs(np.zeros((height, width, 3), np.uint8), np.ones((height, width), np.float32), [])
