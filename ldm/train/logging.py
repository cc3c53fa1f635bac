"""Training logs: per-step metrics CSV, a loss-curve PNG drawn with PIL (no matplotlib), tqdm bar.

``output_path/metrics.csv`` has columns step, epoch, loss, lr, step_time_s, loss_scale;
``output_path/loss_curve.png`` plots loss (and its running mean) against step.
On resume the CSV keeps rows up to the resumed step, so the curve has no duplicated steps.
Every ``callback_size`` steps one loss line goes to the log, worded like MindONE's LossMonitor
(``epoch: E step: S, loss is L``, epoch and step 1-based, the step counted within the epoch), and, as
MindONE's set_logger does, the run's log records at ``log_level`` also go to ``output_path/log_{rank}.txt``.
"""
import contextlib
import csv
import logging
import os

import numpy as np
from PIL import Image, ImageDraw

COLUMNS = ("step", "epoch", "loss", "lr", "step_time_s", "loss_scale")


class MetricsLog:
    def __init__(self, output_path, resume_step=None):
        self.csv_path = os.path.join(output_path, "metrics.csv")
        self.png_path = os.path.join(output_path, "loss_curve.png")
        os.makedirs(output_path, exist_ok=True)
        rows = self.read_rows() if resume_step is not None else []
        rows = [r for r in rows if resume_step is not None and int(r["step"]) <= resume_step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def read_rows(self):
        if not os.path.isfile(self.csv_path):
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write(self, **metrics):
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow({k: metrics.get(k, "") for k in COLUMNS})

    def plot(self):
        rows = self.read_rows()
        if rows:
            steps = np.array([float(r["step"]) for r in rows])
            losses = np.array([float(r["loss"]) for r in rows])
            draw_loss_curve(steps, losses, self.png_path)
        return self.png_path


def _running_mean(values, window):
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = values[max(0, i - window + 1):i + 1].mean()
    return out


def draw_loss_curve(steps, losses, path, size=(640, 400)):
    """Line plot of ``losses`` over ``steps`` (grey raw, blue running mean) with axis labels."""
    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    finite = np.isfinite(losses)
    steps, losses = steps[finite], losses[finite]
    draw.text((left, 8), "training loss", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    if len(losses) == 0:
        img.save(path)
        return path
    x0, x1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))
    y0, y1 = float(losses.min()), float(losses.max())
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def to_px(x, y):
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        _, py = to_px(x0, yv)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{yv:.4g}", fill="black")
        xv = x0 + frac * (x1 - x0)
        px, _ = to_px(xv, y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 10, height - bottom + 8), f"{xv:.0f}", fill="black")
    draw.text((width // 2 - 10, height - 18), "step", fill="black")
    if len(losses) > 1:
        draw.line([to_px(x, y) for x, y in zip(steps, losses)], fill=(170, 170, 170), width=1)
        smooth = _running_mean(losses, max(1, len(losses) // 20))
        draw.line([to_px(x, y) for x, y in zip(steps, smooth)], fill=(30, 80, 220), width=2)
    else:
        px, py = to_px(steps[0], losses[0])
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(30, 80, 220))
    img.save(path)
    return path


def log_loss_line(logger, epoch, step_in_epoch, global_step, total_steps, loss, lr, step_time, overflow=False):
    """The ``callback_size`` line: MindONE's LossMonitor words, then global step, lr and step time."""
    logger.info("epoch: %d step: %d, loss is %.6f (step %d/%d, lr %.6g, %.3f s/step%s)", epoch + 1, step_in_epoch,
                loss, global_step, total_steps, lr, step_time, ", overflow: update skipped" if overflow else "")


@contextlib.contextmanager
def log_file(logger_name, path, level):
    """Copy ``logger_name``'s records at ``level`` and above into ``path`` while the block runs (appended,
    so a resumed run continues the same file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
