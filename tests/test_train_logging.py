"""metrics.csv columns (bucket, val_loss, loss by timestep bin), loss_curve.png panels, TensorBoard events.

Fast and MindSpore-free: the event files are read back by parsing the TFRecord framing here.
"""
import csv
import glob
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ldm.errors import UserError
from ldm.train import logging as tlog
from ldm.train.logging import (BASE_COLUMNS, COLUMNS, ORANGE, PLOT_SIZE, TIMESTEP_BINS, MetricsLog,
                               draw_loss_curve, timestep_bin_losses)

OLD_COLUMNS = ("step", "epoch", "loss", "lr", "step_time_s", "loss_scale")


def _reference_bins(t, losses, T, bins):
    out = {}
    for k in range(bins):
        lo, hi = k * T / bins, (k + 1) * T / bins
        inside = [l for tt, l in zip(t, losses) if lo <= tt < hi]
        out[f"loss_t{k}"] = f"{np.mean(inside):.6f}" if inside else ""
    return out


def test_columns_keep_the_old_ones_first():
    assert TIMESTEP_BINS == 10
    assert BASE_COLUMNS == OLD_COLUMNS
    assert COLUMNS == OLD_COLUMNS + ("bucket", "val_loss") + tuple(f"loss_t{k}" for k in range(10))


@pytest.mark.parametrize("T", [1000, 7])
def test_timestep_bin_losses_match_a_direct_restatement(T):
    rng = np.random.default_rng(T)
    for n in (1, 3, 8, 64):
        t = rng.integers(0, T, n)
        losses = rng.random(n).astype(np.float32)
        assert timestep_bin_losses(t, losses, T) == _reference_bins(t, losses.astype(np.float64), T, 10)
    assert timestep_bin_losses(np.arange(T), np.ones(T), T, bins=3) == _reference_bins(range(T), [1.0] * T, T, 3)


def test_timestep_bin_edges_are_inclusive_left_exclusive_right():
    T = 1000
    got = timestep_bin_losses(np.array([0, 99, 100, 999]), np.array([1.0, 3.0, 5.0, 7.0]), T)
    assert got["loss_t0"] == "2.000000" and got["loss_t1"] == "5.000000" and got["loss_t9"] == "7.000000"
    assert all(got[f"loss_t{k}"] == "" for k in range(2, 9))
    got = timestep_bin_losses(np.arange(7), np.arange(7, dtype=float), 7)   # T=7: edges at 0.7 k
    # t=0 -> bin 0, 1 -> 1 (0.7..1.4), 2 -> 2, 3 -> 4 (2.8..3.5), 4 -> 5, 5 -> 7 (4.9..5.6), 6 -> 8
    expected = {0: 0.0, 1: 1.0, 2: 2.0, 4: 3.0, 5: 4.0, 7: 5.0, 8: 6.0}
    assert got == {f"loss_t{k}": (f"{expected[k]:.6f}" if k in expected else "") for k in range(10)}
    assert timestep_bin_losses(np.zeros(0, int), np.zeros(0), T) == {f"loss_t{k}": "" for k in range(10)}
    with pytest.raises(ValueError):
        timestep_bin_losses(np.array([1000]), np.array([1.0]), T)
    with pytest.raises(ValueError):
        timestep_bin_losses(np.array([1, 2]), np.array([1.0]), T)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_metrics_log_writes_the_new_columns(tmp_path):
    log = MetricsLog(str(tmp_path))
    bins = timestep_bin_losses(np.array([5, 950]), np.array([0.5, 0.25]), 1000)
    log.write(step=1, epoch=0, loss="0.375000", lr="1e-05", step_time_s="0.100", loss_scale="1",
              bucket="64x48", **bins)
    rows = _rows(tmp_path / "metrics.csv")
    assert tuple(rows[0]) == COLUMNS
    row = dict(zip(rows[0], rows[1]))
    assert row["bucket"] == "64x48" and row["val_loss"] == ""
    assert row["loss_t0"] == "0.500000" and row["loss_t9"] == "0.250000" and row["loss_t4"] == ""
    assert rows[1][:3] == ["1", "0", "0.375000"]      # step and loss keep their positions for old readers


def test_resume_from_a_six_column_file_upgrades_the_header(tmp_path):
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(OLD_COLUMNS)
        for s in range(1, 6):
            w.writerow([s, 0, f"{1.0 / s:.6f}", "1e-05", "0.1", "1"])
    log = MetricsLog(str(tmp_path), resume_step=3)
    rows = _rows(tmp_path / "metrics.csv")
    assert tuple(rows[0]) == COLUMNS
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert all(len(r) == len(COLUMNS) and r[6:] == [""] * (len(COLUMNS) - 6) for r in rows[1:])
    assert rows[2][:6] == ["2", "0", "0.500000", "1e-05", "0.1", "1"]
    log.write(step=4, epoch=0, loss="0.2", bucket="32x32")
    assert [r["step"] for r in log.read_rows()] == ["1", "2", "3", "4"]
    assert log.read_rows()[-1]["bucket"] == "32x32"
    MetricsLog(str(tmp_path))                       # a fresh run starts an empty file
    assert _rows(tmp_path / "metrics.csv") == [list(COLUMNS)]


def test_write_validation_sets_the_row_of_its_step_or_appends_one(tmp_path):
    log = MetricsLog(str(tmp_path))
    for s in (1, 2):
        log.write(step=s, epoch=0, loss="0.5")
    log.write_validation(2, 0.25)
    log.write_validation(3, 0.125)                   # step 3 was not logged: a row of its own
    rows = log.read_rows()
    assert [(r["step"], r["loss"], r["val_loss"]) for r in rows] == \
        [("1", "0.5", ""), ("2", "0.5", "0.250000"), ("3", "", "0.125000")]
    assert tuple(_rows(tmp_path / "metrics.csv")[0]) == COLUMNS
    assert not os.path.exists(str(tmp_path / "metrics.csv") + ".tmp")
    log.plot()                                       # a row without a training loss plots


def _orange_pixels(path):
    a = np.asarray(Image.open(path).convert("RGB"))
    return int(np.all(a == np.array(ORANGE, dtype=np.uint8), axis=-1).sum())


def test_plot_draws_validation_in_orange_and_the_bin_panel(tmp_path):
    log = MetricsLog(str(tmp_path), num_train_timesteps=1000)
    rng = np.random.default_rng(0)
    for s in range(1, 31):
        t = rng.integers(0, 1000, 4)
        log.write(step=s, epoch=0, loss=f"{1.0 / s:.6f}", bucket="64x48",
                  **timestep_bin_losses(t, rng.random(4), 1000))
    log.plot()
    img = Image.open(tmp_path / "loss_curve.png")
    assert img.size == PLOT_SIZE
    assert _orange_pixels(tmp_path / "loss_curve.png") == 0
    bar = np.all(np.asarray(img.convert("RGB")) == np.array(tlog.BAR, dtype=np.uint8), axis=-1)
    assert bar[int(PLOT_SIZE[1] * 0.6):].sum() > 100 and bar[:int(PLOT_SIZE[1] * 0.6)].sum() == 0
    for s in (10, 20, 30):
        log.write_validation(s, 0.3)
    log.plot()
    assert Image.open(tmp_path / "loss_curve.png").size == PLOT_SIZE
    assert _orange_pixels(tmp_path / "loss_curve.png") > 20


def test_plot_survives_empty_and_nan_data(tmp_path):
    log = MetricsLog(str(tmp_path))
    assert Image.open(log.plot()).size == PLOT_SIZE       # no rows yet
    log.write(step=1, epoch=0, loss="nan", loss_t3="nan")
    log.write(step=2, epoch=0, loss="")
    log.write_validation(2, float("nan"))
    assert Image.open(log.plot()).size == PLOT_SIZE
    log.write(step=3, epoch=0, loss="0.5", loss_t3="0.5")  # one point, one bar
    assert Image.open(log.plot()).size == PLOT_SIZE
    nan = np.full(4, np.nan)
    draw_loss_curve(np.arange(4.0), nan, str(tmp_path / "a.png"), val_steps=np.arange(4.0), val_losses=nan,
                    bin_means=np.full(10, np.nan), num_train_timesteps=7)
    assert Image.open(tmp_path / "a.png").size == PLOT_SIZE


def test_draw_loss_curve_old_call_keeps_its_size(tmp_path):
    path = draw_loss_curve(np.arange(1.0, 11.0), np.linspace(1, 0.1, 10), str(tmp_path / "c.png"))
    assert Image.open(path).size == (640, 400)
    path = draw_loss_curve(np.arange(3.0), np.ones(3), str(tmp_path / "d.png"), size=(300, 200))
    assert Image.open(path).size == (300, 200)


# ---- TensorBoard

def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _read_records(path):
    """TFRecord framing: uint64 length (LE), uint32 masked crc32c of the length, data, uint32 crc of data."""
    out = []
    with open(path, "rb") as f:
        blob = f.read()
    pos = 0
    while pos < len(blob):
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        assert length_crc == _masked(_crc32c(header))
        data = blob[pos + 12:pos + 12 + length]
        assert len(data) == length
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        assert data_crc == _masked(_crc32c(data))
        out.append(data)
        pos += 16 + length
    return out


def _events(log_dir):
    from tensorboardX.proto.event_pb2 import Event
    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert len(files) == 1, files
    events = []
    for data in _read_records(files[0]):
        event = Event()
        event.ParseFromString(data)
        events.append(event)
    return events


def test_tensorboard_scalars_and_images_read_back(tmp_path):
    from ldm.train.tensorboard_log import TensorBoardLog, open_logger
    logger = open_logger("tensorboard", str(tmp_path))
    assert isinstance(logger, TensorBoardLog) and logger.log_dir == os.path.join(str(tmp_path), "tensorboard")
    logger.scalars(1, {"loss/train": 0.5, "lr": 1e-5, "loss_scale": 1.0, "loss/val": None,
                       "loss_by_t/t0": "0.250000", "loss_by_t/t1": "", "bad": float("nan"), "inf": float("inf")})
    logger.scalars(2, {"loss/train": 0.25, "loss/val": 0.75})
    images = np.zeros((2, 12, 20, 3), np.uint8)
    images[1, :, :, 0] = 255
    logger.images(2, "validation", images)
    logger.close()
    logger.close()
    events = _events(str(tmp_path / "tensorboard"))
    assert events[0].file_version.startswith("brain.Event")
    scalars, imgs = [], {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("image"):
                imgs[v.tag] = (e.step, v.image.height, v.image.width, v.image.colorspace, v.image.encoded_image_string)
            else:
                scalars.append((e.step, v.tag, v.simple_value))
    assert [(s, tag) for s, tag, _ in scalars] == [(1, "loss/train"), (1, "lr"), (1, "loss_scale"),
                                                   (1, "loss_by_t/t0"), (2, "loss/train"), (2, "loss/val")]
    np.testing.assert_allclose([v for _, _, v in scalars], [0.5, 1e-5, 1.0, 0.25, 0.25, 0.75], rtol=1e-6)
    assert sorted(imgs) == ["validation/0", "validation/1"]
    assert all(i[:4] == (2, 12, 20, 3) for i in imgs.values())
    import io
    decoded = np.asarray(Image.open(io.BytesIO(imgs["validation/1"][4])).convert("RGB"))
    assert decoded.shape == (12, 20, 3) and (decoded[..., 0] == 255).all() and (decoded[..., 1] == 0).all()


def test_open_logger_choices_and_missing_package(tmp_path, monkeypatch):
    from ldm.train import tensorboard_log
    assert tensorboard_log.open_logger("", str(tmp_path)) is None
    assert tensorboard_log.open_logger("none", str(tmp_path)) is None
    with pytest.raises(UserError, match="none, tensorboard"):
        tensorboard_log.open_logger("wandb", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorboardX", None)       # import tensorboardX raises ImportError
    with pytest.raises(UserError) as err:
        tensorboard_log.open_logger("tensorboard", str(tmp_path))
    assert str(err.value) == "log_with tensorboard needs the tensorboardX package: pip install tensorboardX"
    assert not os.path.exists(tmp_path / "tensorboard")
    with pytest.raises(ValueError):
        tensorboard_log.TensorBoardLog.images(None, 0, "x", np.zeros((1, 4, 4, 3), np.float32))


def test_logging_modules_do_not_import_mindspore():
    code = ("import sys, ldm.train.logging, ldm.train.tensorboard_log; "
            "sys.exit(1 if any(m.split('.')[0] == 'mindspore' for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0
