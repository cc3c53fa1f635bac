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
