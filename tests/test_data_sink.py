"""dataset_sink_mode (MindONE's Ascend throughput switch) on CPU: MindSpore 2.8 cannot sink a dataset
here, so a recipe that sets it trains exactly as without it and says why in one line (docs/data_sink.md).

If a MindSpore upgrade makes any sink route work on CPU, test_mindspore_cannot_sink_on_cpu fails: then
build the sink path (ms.data_sink over the train step) instead of the notice."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from ldm.io.ms_checkpoint import read_checkpoint
from ldm.train.config import parse_config
from ldm.train.loop import TrainRun, sink_notice
from tests.train_standin import make_shapes, write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(REPO, "scripts", "probe_data_sink.py")


@pytest.fixture(autouse=True)
def _restore_ldm_log_level():
    yield
    logging.getLogger("ldm").setLevel(logging.NOTSET)  # TrainRun applies log_level to the "ldm" logger


def test_mindspore_cannot_sink_on_cpu():
    """Every route to MindSpore's sink, in one interpreter (a sink attempt leaves process-wide state)."""
    routes = ["data_sink", "dataset_helper_graph", "dataset_helper_pynative", "model_train", "private_getnext"]
    proc = subprocess.run([sys.executable, PROBE, "--route"] + routes, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = {r["route"]: r for r in (json.loads(ln[len("RESULT "):]) for ln in proc.stdout.splitlines()
                                   if ln.startswith("RESULT "))}
    assert set(res) == set(routes), proc.stdout
    assert res["data_sink"]["detail"] == ("ValueError: Data sinking supports ascend or gpu device target, "
                                          "but device target is CPU.")
    assert res["dataset_helper_graph"]["detail"].startswith(
        "RuntimeError: Currently dataset sink mode is not supported when the device target is CPU")
    for route in ("dataset_helper_pynative", "private_getnext"):   # the queue kernel itself is missing
        assert res[route]["detail"].startswith("RuntimeError: Unsupported op [InitDataSetQueue] on CPU"), res[route]
    # Model.train accepts the switch and silently feeds every step from the host: one callback per step
    assert res["model_train"]["outcome"] == "falls back to host feeding", res["model_train"]
    assert not [r for r in res.values() if r["outcome"] == "sinks"]


def _losses(out):
    rows = open(os.path.join(out, "metrics.csv")).read().strip().splitlines()[1:]
    return [row.split(",")[2] for row in rows]


def test_sink_key_gives_one_notice_line_and_changes_nothing_else(tmp_path, caplog):
    data = make_shapes(tmp_path / "shapes", num_train=4, size=32)
    model = write_standin_config(tmp_path)
    notice = sink_notice(True)
    runs = {}
    for sink in (True, False):
        out = tmp_path / f"sink_{sink}"
        cfg = parse_config(["--model_config", model, "--data_path", data, "--output_path", str(out),
                            "--image_size", "32", "--train_batch_size", "2", "--show_progress", "False",
                            "--mode", "1", "--seed", "5", "--max_steps", "3", "--epochs", "0",
                            "--gradient_accumulation_steps", "2", "--use_ema", "True",
                            "--dataset_sink_mode", str(sink)])
        caplog.clear()
        with caplog.at_level(logging.INFO):
            summary = TrainRun(cfg).run()
        assert summary["global_step"] == 3
        lines = [(r.levelno, r.getMessage()) for r in caplog.records if "dataset_sink_mode" in r.getMessage()]
        log_lines = [ln.rstrip() for ln in open(out / "log_0.txt") if "dataset_sink_mode" in ln]
        if sink:
            assert lines == [(logging.WARNING, notice)]
            assert len(log_lines) == 1 and log_lines[0].endswith(notice), log_lines
        else:
            assert lines == [] and log_lines == []
        runs[sink] = (_losses(out), read_checkpoint(str(out / "ckpt" / "train_resume.ckpt")))
    assert notice == ("dataset_sink_mode: MindSpore cannot sink a dataset on CPU (no InitDataSetQueue/GetNext "
                      "kernel; ms.data_sink refuses CPU); every step is fed from the host")
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 3
    sunk, fed = runs[True][1], runs[False][1]   # trained weights, optimiser moments, EMA shadows
    assert sorted(sunk) == sorted(fed) and any("ema" in name for name in fed), sorted(fed)
    for name in fed:
        np.testing.assert_array_equal(np.asarray(sunk[name]), np.asarray(fed[name]), err_msg=name)
