"""text_to_image.py --compile_cache: one folder per distinct run, and an identical second run that
loads its graphs from it gives the same PNGs without compiling again."""
import os
import re
import subprocess
import sys

import pytest

from ldm import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CACHE_VARS = ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")


@pytest.fixture
def cache_env():
    """enable() sets these for the whole process: put them back afterwards, or every later MindSpore
    compile and CLI subprocess of the suite shares this test's cache (monkeypatch.delenv of an absent
    variable records nothing to restore)."""
    saved = {k: os.environ.pop(k, None) for k in CACHE_VARS}
    yield
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def test_folder_per_distinct_run_and_off(tmp_path, cache_env):
    a = compile_cache.cache_folder(str(tmp_path), "txt2img", {"W": 32})
    assert a == compile_cache.cache_folder(str(tmp_path), "txt2img", {"W": 32})
    assert a != compile_cache.cache_folder(str(tmp_path), "txt2img", {"W": 64})
    assert a != compile_cache.cache_folder(str(tmp_path), "train", {"W": 32})
    assert compile_cache.enable("off", "txt2img", {}) is None
    assert "MS_COMPILER_CACHE_PATH" not in os.environ
    folder = compile_cache.enable(str(tmp_path), "txt2img", {"W": 32})
    assert folder == a and os.path.isdir(a) and os.environ["MS_COMPILER_CACHE_PATH"] == a


@pytest.mark.slow
def test_identical_second_run_skips_compilation_and_draws_the_same(tmp_path):
    cache = tmp_path / "cache"
    runs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "text_to_image.py"), "--config", "configs/tiny-shapes-v2.yaml",
             "--ckpt_path", "models/tiny_shapes_base.ckpt", "--W", "32", "--H", "32", "--sampling_steps", "3",
             "--n_iter", "1", "--n_samples", "2", "--prompt", "a red circle", "--compile_cache", str(cache),
             "--output_path", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        first = float(re.search(r"time to first image ([0-9.]+) s", proc.stderr).group(1))
        runs.append((first, [(out / "samples" / f"{j:05d}.png").read_bytes() for j in range(2)]))
    assert len(os.listdir(cache)) == 1
    assert runs[1][1] == runs[0][1]
    assert runs[1][0] < 0.5 * runs[0][0], runs      # measured 9.9 s -> 1.0 s on 2 cores


def test_training_key_ignores_where_outputs_go_not_what_is_trained(tmp_path):
    from ldm.train.config import graph_key, parse_config
    base = ["--model_config", os.path.join(REPO, "configs", "tiny-v2.yaml"), "--data_path", str(tmp_path),
            "--image_size", "32"]
    key = graph_key(parse_config(base + ["--output_path", str(tmp_path / "a")]))
    assert key == graph_key(parse_config(base + ["--output_path", str(tmp_path / "b"), "--show_progress", "False"]))
    assert key != graph_key(parse_config(base + ["--output_path", str(tmp_path / "a"), "--train_batch_size", "2"]))


@pytest.mark.slow
def test_identical_second_training_run_loads_the_step_and_trains_the_same(tmp_path):
    """A cached training step once gave NaN losses (MindSpore 2.8 binding a cached closure's parameters);
    the step is now compiled through a Cell: same losses, same weights, first step without compiling."""
    from ldm.convert.readers import read_weight_file
    from tests.train_standin import make_shapes
    data = make_shapes(tmp_path / "data", num_train=8)
    cache, runs = tmp_path / "cache", []
    for i in range(2):
        out = tmp_path / f"run{i}"
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "train_text_to_image.py"), "--model_config", "configs/tiny-v2.yaml",
             "--data_path", data, "--output_path", str(out), "--image_size", "32", "--train_batch_size", "4",
             "--max_steps", "3", "--step_mode", "True", "--ckpt_save_interval", "3", "--callback_size", "1",
             "--show_progress", "False", "--compile_cache", str(cache)],
            capture_output=True, text=True, cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        steps = re.findall(r"loss is ([0-9.]+) \(step \d+/3, lr [^,]+, ([0-9.]+) s/step", proc.stderr)
        assert len(steps) == 3, proc.stderr[-2000:]
        weights = read_weight_file(str(out / "ckpt" / "sd-3.ckpt"))
        runs.append(([loss for loss, _ in steps], float(steps[0][1]), weights))
    assert len(os.listdir(cache)) == 1
    assert runs[1][0] == runs[0][0]
    import numpy as np
    floats = [k for k, v in runs[0][2].items() if np.asarray(v).dtype.kind == "f"]
    assert floats and all(np.array_equal(np.asarray(runs[0][2][k]), np.asarray(runs[1][2][k])) for k in floats)
    assert runs[1][1] < 0.5 * runs[0][1], (runs[0][1], runs[1][1])    # measured 12.8 s -> 1.5 s on 2 cores
