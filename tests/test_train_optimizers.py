"""kohya-ss's optimiser flags through a real training run (the stand-in model, compiled step): each new
optimiser trains a few steps with a finite loss and moving weights; optimizer_type / optimizer_args /
unet_lr / text_encoder_lr / cosine_with_restarts parse as kohya-ss spells them and reach the optimiser;
the log states the optimiser's state size. All runs share one process (and the stand-in's data)."""
import logging
import math

import numpy as np
import pytest

from ldm.train.config import parse_config
from ldm.train.loop import TrainRun
from tests.train_standin import make_shapes, write_standin_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("optim")
    return dict(data=make_shapes(root / "shapes", num_train=4, size=32), model=write_standin_config(root))


def _cfg(ws, out, *extra):
    return parse_config(["--model_config", ws["model"], "--data_path", ws["data"], "--output_path", str(out),
                         "--image_size", "32", "--train_batch_size", "2", "--max_steps", "2",
                         "--show_progress", "False", "--seed", "3"] + [str(e) for e in extra])


RUNS = [
    ("lion", ["--optim", "lion", "--start_learning_rate", "1e-4"]),
    ("lamb", ["--optim", "lamb", "--start_learning_rate", "1e-3"]),
    # kohya-ss's spelling: --optimizer_type AdaFactor --optimizer_args relative_step=False ...
    ("adafactor", ["--optimizer_type", "AdaFactor", "--optimizer_args", "relative_step=False",
                   "scale_parameter=False", "warmup_init=False", "--start_learning_rate", "1e-3"]),
    ("prodigy", ["--optimizer_type", "Prodigy", "--optimizer_args", "d_coef=2 use_bias_correction=True",
                 "safeguard_warmup=True", "--start_learning_rate", "1.0", "--scheduler", "cosine_with_restarts",
                 "--lr_scheduler_num_cycles", "2", "--train_text_encoder", "True", "--unet_lr", "1.0",
                 "--text_encoder_lr", "0.5"]),
]


def test_each_new_optimizer_trains_the_standin_model(workspace, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ldm")
    for name, flags in RUNS:
        cfg = _cfg(workspace, tmp_path / name, *flags)
        assert cfg.optim == name
        run = TrainRun(cfg)
        before = [p.asnumpy().copy() for p in run.trainable]
        summary = run.run()
        assert summary["global_step"] == 2 and math.isfinite(summary["last_loss"]), (name, summary)
        moved = [not np.array_equal(b, p.asnumpy()) for b, p in zip(before, run.trainable)]
        assert all(moved), (name, [p.name for p, m in zip(run.trainable, moved) if not m])
        assert f"optimizer {name}: state " in caplog.text
    assert "learning rates: UNet 1, text encoder 0.5" in caplog.text
    assert "d_coef=2.0" in caplog.text and "use_bias_correction=True" in caplog.text
    settings = (tmp_path / "prodigy" / "args.yaml").read_text()
    assert "optimizer_args:" in settings and "d_coef: 2" in settings and "lr_scheduler_num_cycles: 2" in settings


def test_prodigy_run_resumes_bit_for_bit(workspace, tmp_path):
    """Prodigy's whole state (moments, s, p0, d, d_max, its numerator, the step) is in train_resume.ckpt:
    2 steps + --resume to 4 ends with the weights of an uninterrupted 4-step run."""
    flags = ["--optim", "prodigy", "--start_learning_rate", "1.0", "--optimizer_args", "d0=1e-4", "slice_p=3",
             "--train_text_encoder", "True", "--text_encoder_lr", "0.5", "--log_level", "logging.WARNING"]
    whole = TrainRun(_cfg(workspace, tmp_path / "whole", *flags, "--max_steps", "4"))
    whole.run()
    TrainRun(_cfg(workspace, tmp_path / "parts", *flags)).run()
    resumed = TrainRun(_cfg(workspace, tmp_path / "parts", *flags, "--max_steps", "4", "--resume", "True"))
    assert resumed.global_step == 2
    resumed.run()
    for a, b in zip(resumed.trainable, whole.trainable):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=a.name)
    assert float(resumed.optimizer.d.asnumpy()) == float(whole.optimizer.d.asnumpy()) > 1e-4
