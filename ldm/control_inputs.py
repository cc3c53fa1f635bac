"""Control images of a ControlNet run: read, run through a detector, fitted to the output size, made a hint.

The hint a ControlNet reads is diffusers' (``VaeImageProcessor(do_convert_rgb=True, do_normalize=False)``):
RGB, float32 in [0, 1], (N, 3, H, W) at the output size, resized with Lanczos when it is another size.

Sizes: a control image whose aspect ratio is the output's (W/H within 1%) is resized to the output size with a
notice; another aspect ratio is an error (diffusers stretches it silently). Without an explicit size the output
size follows the control image, MindONE's rule (``resize_image``): the shorter side scaled to
``image_resolution``, both sides rounded to the model's size multiple (64 for SD), the image resized to that.

Detectors: ``canny`` (:func:`ldm.data.canny.canny`, OpenCV's rules; thresholds 100 / 200 as MindONE's default)
turns a photo into a white-on-black edge map (3 equal channels, MindONE's ``HWC3``); ``none`` takes the image as
the control map. Only numpy, scipy and PIL: the CLI runs all of this before MindSpore is imported.
"""
import logging
import os

import numpy as np
from PIL import Image

from ldm.errors import UserError
from ldm.io.images import same_aspect

logger = logging.getLogger(__name__)
DETECTORS = ("none", "canny")


def read_control_image(path, flag="control image"):
    """uint8 (H, W, 3) RGB of an image file (grey, palette and RGBA images converted, alpha dropped); a missing,
    unreadable or undecodable file is one UserError naming ``flag`` and the path."""
    from ldm.io.images import load_image
    from ldm.run_checks import check_input_file
    check_input_file(flag, path)
    return load_image(path)


def as_rgb(image):
    """uint8 (H, W, 3) (or (N, H, W, 3)) from a path, a PIL image or a uint8 array (H, W) / (H, W, 1|3|4)."""
    if isinstance(image, (str, os.PathLike)):
        return read_control_image(os.fspath(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise UserError(f"a control image array must be uint8 (H, W, 3), got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3, 4):
        raise UserError(f"a control image array must be (H, W), (H, W, 3) or (N, H, W, 3), got {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def fit_to_size(image, width, height, what="control image", resample=Image.LANCZOS):
    """(uint8 (H, W, 3) at width x height, notice or None): resized when the aspect ratio agrees, else refused."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image, None
    if not same_aspect((w, h), (width, height)):
        raise UserError(f"{what} is {w}x{h}, the output {width}x{height}: another aspect ratio (W/H {w / h:.3f} vs "
                        f"{width / height:.3f}); crop it to {width}:{height} or pass --W/--H of its shape")
    resized = np.asarray(Image.fromarray(image).resize((width, height), resample), dtype=np.uint8)
    return resized, f"{what} {w}x{h} resized to {width}x{height}"


def size_from_image(image, resolution, multiple):
    """MindONE's output size for a control image: shorter side -> ``resolution``, both sides rounded to
    ``multiple`` (at least one multiple)."""
    h, w = image.shape[:2]
    k = float(resolution) / min(h, w)
    return (max(multiple, int(np.round(w * k / multiple)) * multiple),
            max(multiple, int(np.round(h * k / multiple)) * multiple))


def detect(image, detector="none", low=100, high=200, sigma=0.0):
    """The control map of a uint8 (H, W, 3) image: the image itself, or its canny edges as 3 equal channels."""
    if detector == "none":
        return image
    if detector == "canny":
        from ldm.data.canny import canny
        edges = canny(image, low, high, sigma)
        return np.repeat(edges[..., None], 3, axis=-1)
    raise UserError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")


def to_hint(image, n, width, height, what="control image"):
    """float32 (n, 3, height, width) in [0, 1] from one image or n images (a path, PIL image or uint8 array;
    uint8 (n, H, W, 3) or a list), each resized when its aspect ratio agrees (the notice is logged)."""
    if isinstance(image, (list, tuple)):
        items = [as_rgb(i) for i in image]
        if any(i.ndim != 3 for i in items):
            raise UserError(f"a list of {what}s holds one image per entry, (H, W, 3) each")
    else:
        rgb = as_rgb(image)
        items = list(rgb) if rgb.ndim == 4 else [rgb]
    if len(items) not in (1, n):
        raise UserError(f"{len(items)} {what}s for {n} images: give one, or one per image")
    fitted = []
    for img in items:
        img, note = fit_to_size(img, width, height, what)
        if note:
            logger.info(note)
        fitted.append(img)
    hint = np.stack(fitted).astype(np.float32) / 255.0
    if len(hint) == 1 and n > 1:
        hint = np.repeat(hint, n, axis=0)
    return np.ascontiguousarray(hint.transpose(0, 3, 1, 2))
