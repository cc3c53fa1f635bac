"""Two CPU ranks under msrun and under mpirun: both ranks end with identical weights, equal (<= 1e-5)
to one process trained with the doubled batch. Launched through scripts/run_train_distributed.sh."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.train_standin import make_shapes, write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "scripts", "run_train_distributed.sh")
TRAIN = os.path.join(REPO, "train_text_to_image.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(dump_dir, **extra):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # msrun starts `python`
    env["PYTHONPATH"] = REPO
    env["GLOG_v"] = "3"
    env["MSD_DUMP_RANK_WEIGHTS"] = str(dump_dir)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = make_shapes(root / "shapes", num_train=16, size=32)
    model = write_standin_config(root)

    def args(out, batch):
        return ["--model_config", model, "--data_path", data, "--output_path", str(out), "--image_size", "32",
                "--train_batch_size", str(batch), "--epochs", "2", "--start_learning_rate", "2e-3",
                "--use_ema", "True", "--ema_decay", "0.8", "--snr_gamma", "5", "--show_progress", "False"]
    single = root / "single"
    subprocess.run([sys.executable, TRAIN] + args(single, 4), check=True, cwd=REPO, capture_output=True,
                   env=_env(single / "dump"), timeout=300)
    return dict(root=root, args=args, single=dict(np.load(single / "dump" / "rank0.npz")))


@pytest.mark.parametrize("launcher", ["msrun", "mpirun"])
def test_two_ranks_match_each_other_and_the_doubled_batch(setup, launcher):
    if shutil.which(launcher, path=_env("x")["PATH"]) is None:
        pytest.fail(f"{launcher} not installed (msrun comes with mindspore; mpirun: apt-get install openmpi-bin)")
    out = setup["root"] / launcher
    out.mkdir()
    env = _env(out / "dump", MASTER_PORT=str(_free_port()), LOG_DIR=str(out / "logs"))
    proc = subprocess.run(["bash", LAUNCHER, launcher, "2"] + setup["args"](out, 2), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    r0, r1 = np.load(out / "dump" / "rank0.npz"), np.load(out / "dump" / "rank1.npz")
    single = setup["single"]
    assert set(r0.files) == set(single)
    moved = 0.0
    for name in single:
        np.testing.assert_array_equal(r0[name], r1[name], err_msg=name)
        np.testing.assert_allclose(r0[name], single[name], atol=1e-5, rtol=0, err_msg=name)
        moved = max(moved, float(np.abs(r0[name]).max()))
    assert moved > 0
    assert (out / "ckpt" / "sd-2.ckpt").exists() and (out / "metrics.csv").exists()
