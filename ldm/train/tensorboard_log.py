"""``--log_with tensorboard``: TensorBoard event files under ``output_path/tensorboard``.

The writer is tensorboardX (pure Python, protobuf only), imported when a logger is opened, so runs that do
not ask for TensorBoard do not need it. This module does not import MindSpore.
"""
import math
import os

import numpy as np

from ldm.errors import UserError

LOG_WITH_CHOICES = ("none", "tensorboard")
MISSING_PACKAGE = "log_with tensorboard needs the tensorboardX package: pip install tensorboardX"


class TensorBoardLog:
    """Scalars and images for TensorBoard, written to event files in ``log_dir``."""

    def __init__(self, log_dir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UserError(MISSING_PACKAGE) from None
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self._writer = SummaryWriter(logdir=log_dir)

    def scalars(self, step, values):
        """One scalar per ``values`` entry (tag -> number, e.g. ``{"loss/train": 0.1, "lr": 1e-5}``);
        None, "" and non-finite values are skipped, numeric strings (CSV fields) are converted."""
        for tag, value in values.items():
            if value is None or (isinstance(value, str) and value.strip() == ""):
                continue
            value = float(value)
            if math.isfinite(value):
                self._writer.add_scalar(tag, value, global_step=int(step))

    def images(self, step, tag, images):
        """``images``: uint8 (N, H, W, 3) (or one (H, W, 3) image); image i goes under ``f"{tag}/{i}"``."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"TensorBoardLog.images wants uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        for i, image in enumerate(images):
            self._writer.add_image(f"{tag}/{i}", image, global_step=int(step), dataformats="HWC")

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        """Flush and close the event file (a second call does nothing)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_logger(log_with, output_path):
    """The logger ``--log_with`` asks for: None for "" / "none", a :class:`TensorBoardLog` writing to
    ``output_path/tensorboard`` for "tensorboard"."""
    name = (log_with or "").strip().lower()
    if name in ("", "none"):
        return None
    if name == "tensorboard":
        return TensorBoardLog(os.path.join(output_path, "tensorboard"))
    raise UserError(f"log_with {log_with!r} is not supported; choose one of: {', '.join(LOG_WITH_CHOICES)}")
