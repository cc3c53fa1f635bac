"""Training logs: per-step metrics CSV, a loss-curve PNG drawn with PIL (no matplotlib), tqdm bar.

``output_path/metrics.csv`` has the columns of :data:`COLUMNS`: step, epoch, loss, lr, step_time_s,
loss_scale, then bucket (the step's batch size as ``WxH``, "" if unknown), val_loss (only on steps where a
validation loss was computed) and loss_t0 ... loss_t9 (the step's training loss split by timestep bin,
see :func:`timestep_bin_losses`); a field with nothing to say is "".
``output_path/loss_curve.png`` has two panels: on top the training loss (grey) with its running mean (blue)
and the validation loss (orange) against step; below, a bar chart of the loss by timestep bin, each bar
the mean over the last :data:`BIN_WINDOW` logged steps that have a value for that bin.
On resume the CSV keeps rows up to the resumed step, so the curve has no duplicated steps; a CSV written
before the new columns existed (6 columns) is read with the missing fields empty and rewritten with the
full header.
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

TIMESTEP_BINS = 10
BIN_WINDOW = 200            # the bar chart's mean runs over at most this many of the latest logged steps
BASE_COLUMNS = ("step", "epoch", "loss", "lr", "step_time_s", "loss_scale")
BIN_COLUMNS = tuple(f"loss_t{k}" for k in range(TIMESTEP_BINS))
COLUMNS = BASE_COLUMNS + ("bucket", "val_loss") + BIN_COLUMNS
PLOT_SIZE = (640, 640)      # loss_curve.png: training/validation loss on top, loss by timestep bin below

GREY = (170, 170, 170)
BLUE = (30, 80, 220)
ORANGE = (255, 140, 0)
BAR = (70, 130, 180)


def timestep_bin_losses(t, per_sample_loss, num_train_timesteps, bins=TIMESTEP_BINS):
    """The step's loss split by timestep: ``{"loss_t0": "0.123456" or "", ...}``.

    Bin k covers t in [k*T/bins, (k+1)*T/bins) for T = ``num_train_timesteps``; its value is the mean of
    ``per_sample_loss`` over the samples whose ``t`` fell in it, "" when none did. ``t`` must lie in [0, T).
    """
    t = np.asarray(t).reshape(-1)
    losses = np.asarray(per_sample_loss, dtype=np.float64).reshape(-1)
    if t.shape != losses.shape:
        raise ValueError(f"timestep_bin_losses: {t.size} timesteps but {losses.size} per-sample losses")
    if num_train_timesteps < 1 or bins < 1:
        raise ValueError(f"timestep_bin_losses: num_train_timesteps ({num_train_timesteps}) and bins ({bins}) "
                         "must be >= 1")
    if not np.issubdtype(t.dtype, np.integer) and not np.all(t == np.floor(t)):
        raise ValueError("timestep_bin_losses: timesteps must be integers")
    t = t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_train_timesteps):
        raise ValueError(f"timestep_bin_losses: timesteps must lie in [0, {num_train_timesteps}), "
                         f"got {t.min()}..{t.max()}")
    which = t * bins // num_train_timesteps     # floor(t / (T / bins)) in exact integer arithmetic
    sums = np.bincount(which, weights=losses, minlength=bins)
    counts = np.bincount(which, minlength=bins)
    return {f"loss_t{k}": (f"{sums[k] / counts[k]:.6f}" if counts[k] else "") for k in range(bins)}


def _float(value):
    """A CSV field as a float; "" (or anything unparsable) is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class MetricsLog:
    """``metrics.csv`` (one row per logged step) and ``loss_curve.png``.

    ``num_train_timesteps`` (T) only labels the bar chart's x axis with each bin's first timestep; without
    it the bins are labelled as fractions of T.
    """

    def __init__(self, output_path, resume_step=None, num_train_timesteps=None):
        self.csv_path = os.path.join(output_path, "metrics.csv")
        self.png_path = os.path.join(output_path, "loss_curve.png")
        self.num_train_timesteps = num_train_timesteps
        os.makedirs(output_path, exist_ok=True)
        rows = self.read_rows() if resume_step is not None else []
        rows = [r for r in rows if resume_step is not None and int(r["step"]) <= resume_step]
        self._rewrite(rows)

    def read_rows(self):
        """The CSV's rows as dicts with every column of :data:`COLUMNS` (missing ones "", as in a file
        written before they existed); columns this version does not know are dropped."""
        if not os.path.isfile(self.csv_path):
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return [{k: (r.get(k) or "") for k in COLUMNS} for r in csv.DictReader(f)]

    def _rewrite(self, rows):
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def write(self, **metrics):
        """Append one row; columns not given are "" (pass ``**timestep_bin_losses(...)`` for the bins)."""
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow({k: metrics.get(k, "") for k in COLUMNS})

    def write_validation(self, step, val_loss):
        """Record the validation loss of ``step``.

        If a row for ``step`` exists (the normal case: the training row of the step is written first),
        its val_loss is set and the file rewritten, so there is one row per step; otherwise (the step was
        not logged, e.g. ``log_interval`` > 1) a row with only step and val_loss is appended.
        """
        value = val_loss if isinstance(val_loss, str) else f"{float(val_loss):.6f}"
        rows = self.read_rows()
        for row in reversed(rows):
            if _float(row["step"]) == step:
                row["val_loss"] = value
                self._rewrite(rows)
                return
        self.write(step=step, val_loss=value)

    def plot(self):
        """Draw ``loss_curve.png`` from the CSV (an empty chart when there are no rows yet)."""
        rows = self.read_rows()
        column = lambda name: np.array([_float(r[name]) for r in rows], dtype=np.float64)  # noqa: E731
        steps = column("step")
        bin_means = []
        for name in BIN_COLUMNS:
            values = column(name)
            values = values[np.array([r[name] != "" for r in rows], dtype=bool)][-BIN_WINDOW:]
            values = values[np.isfinite(values)]
            bin_means.append(values.mean() if values.size else float("nan"))
        draw_loss_curve(steps, column("loss"), self.png_path, size=PLOT_SIZE, val_steps=steps,
                        val_losses=column("val_loss"), bin_means=np.array(bin_means),
                        num_train_timesteps=self.num_train_timesteps)
        return self.png_path


def _running_mean(values, window):
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = values[max(0, i - window + 1):i + 1].mean()
    return out


def _bin_labels(bins, num_train_timesteps):
    if num_train_timesteps:
        return [f"{k * num_train_timesteps / bins:g}" for k in range(bins)]
    return ["0"] + [f"{k / bins:g}T" for k in range(1, bins)]


def draw_loss_curve(steps, losses, path, size=None, val_steps=None, val_losses=None, bin_means=None,
                    num_train_timesteps=None):
    """Line plot of ``losses`` over ``steps`` (grey raw, blue running mean) with axis labels.

    ``val_steps``/``val_losses`` add the validation loss in orange (points joined by a line) and a legend;
    ``bin_means`` (one value per timestep bin, NaN for none) adds a bottom panel with a bar chart of the
    loss by timestep bin, labelled with each bin's first t when ``num_train_timesteps`` is given. ``size``
    defaults to 640 x 400 for the loss panel alone and :data:`PLOT_SIZE` with the bar chart.
    """
    if size is None:
        size = (640, 400) if bin_means is None else PLOT_SIZE
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    top_height = height if bin_means is None else int(height * 0.6)
    _draw_loss_panel(draw, (0, 0, width, top_height), np.asarray(steps, dtype=np.float64),
                     np.asarray(losses, dtype=np.float64),
                     None if val_steps is None else np.asarray(val_steps, dtype=np.float64),
                     None if val_losses is None else np.asarray(val_losses, dtype=np.float64))
    if bin_means is not None:
        means = np.asarray(bin_means, dtype=np.float64).reshape(-1)
        _draw_bin_panel(draw, (0, top_height, width, height), means,
                        _bin_labels(len(means), num_train_timesteps),
                        "t (first timestep of the bin)" if num_train_timesteps else "t / T (bin start)")
    img.save(path)
    return path


def _draw_loss_panel(draw, box, steps, losses, val_steps, val_losses):
    bx0, by0, bx1, by1 = box
    left, right, top, bottom = bx0 + 70, bx1 - 20, by0 + 30, by1 - 50
    finite = np.isfinite(steps) & np.isfinite(losses)
    steps, losses = steps[finite], losses[finite]
    if val_steps is not None and val_losses is not None:
        vfinite = np.isfinite(val_steps) & np.isfinite(val_losses)
        val_steps, val_losses = val_steps[vfinite], val_losses[vfinite]
    else:
        val_steps = val_losses = np.zeros(0)
    draw.text((left, by0 + 8), "training loss" + (" / validation loss" if len(val_losses) else ""),
              fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    all_x = np.concatenate([steps, val_steps])
    all_y = np.concatenate([losses, val_losses])
    if len(all_y) == 0:
        return
    x0, x1 = float(all_x.min()), float(max(all_x.max(), all_x.min() + 1))
    y0, y1 = float(all_y.min()), float(all_y.max())
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def to_px(x, y):
        px = left + (x - x0) / (x1 - x0) * (right - left)
        py = bottom - (y - y0) / (y1 - y0) * (bottom - top)
        return px, py

    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        _, py = to_px(x0, yv)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((bx0 + 4, py - 6), f"{yv:.4g}", fill="black")
        xv = x0 + frac * (x1 - x0)
        px, _ = to_px(xv, y0)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 10, bottom + 8), f"{round(xv, 1):g}", fill="black")     # 2.5, not a rounded 2
    draw.text(((left + right) // 2 - 10, by1 - 18), "step", fill="black")
    if len(losses) > 1:
        draw.line([to_px(x, y) for x, y in zip(steps, losses)], fill=GREY, width=1)
        smooth = _running_mean(losses, max(1, len(losses) // 20))
        draw.line([to_px(x, y) for x, y in zip(steps, smooth)], fill=BLUE, width=2)
    elif len(losses) == 1:
        px, py = to_px(steps[0], losses[0])
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=BLUE)
    legend = [("loss", GREY), ("running mean", BLUE)] if len(losses) else []
    if len(val_losses):
        order = np.argsort(val_steps, kind="stable")
        points = [to_px(x, y) for x, y in zip(val_steps[order], val_losses[order])]
        if len(points) > 1:
            draw.line(points, fill=ORANGE, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=ORANGE)
        legend.append(("validation", ORANGE))
    lx, ly = right - 110, top + 6
    for i, (name, colour) in enumerate(legend):
        y = ly + 14 * i
        draw.rectangle([lx, y + 3, lx + 14, y + 7], fill=colour)
        draw.text((lx + 20, y), name, fill="black")


def _draw_bin_panel(draw, box, means, labels, xlabel):
    bx0, by0, bx1, by1 = box
    left, right, top, bottom = bx0 + 70, bx1 - 20, by0 + 30, by1 - 50
    draw.text((left, by0 + 8), f"loss by timestep bin (mean of the last {BIN_WINDOW} logged steps)",
              fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) // 2 - 3 * len(xlabel), by1 - 18), xlabel, fill="black")
    draw.text((bx0 + 4, by0 + 8), "loss", fill="black")
    n = len(means)
    if n == 0:
        return
    slot = (right - left) / n
    for k, label in enumerate(labels):
        cx = left + (k + 0.5) * slot
        draw.line([cx, bottom, cx, bottom + 4], fill="black")
        draw.text((cx - 3 * len(label), bottom + 8), label, fill="black")
    finite = means[np.isfinite(means)]
    if finite.size == 0:
        draw.text((left + 10, top + 10), "no data yet", fill="black")
        return
    y0, y1 = min(0.0, float(finite.min())), max(0.0, float(finite.max()))
    if y1 - y0 < 1e-12:
        y1 = y0 + 1.0
    to_py = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        py = to_py(yv)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((bx0 + 4, py - 6), f"{yv:.4g}", fill="black")
    for k, value in enumerate(means):
        if not np.isfinite(value):
            continue
        xa, xb = left + k * slot + 0.15 * slot, left + (k + 0.85) * slot
        ya, yb = sorted((to_py(0.0), to_py(value)))
        draw.rectangle([xa, ya, xb, max(yb, ya + 1)], fill=BAR, outline=BAR)


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
