"""The memory estimate and plan of text_to_image.py (ldm/memory_estimate.py, ldm/param_count.py).

* parameter counts by arithmetic equal the built models' (so fp16 files are not mistaken for the weights);
* the estimate is an upper bound of measured peaks (``ru_maxrss`` of a fresh text_to_image.py process) at
  several sizes and attention modes, and not a wildly loose one;
* a batch that does not fit is split into micro-batches (one INFO line) that give the same pictures (up to
  1/255 of rounding), and a
  size that does not fit even one image at a time is refused in one line before anything is loaded.
Full-size figures (SD 2.1-v, 768 px): bench/bench_memory.py and docs/attention.md.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from ldm import memory_estimate
from ldm.models.attention_ops import AttentionSettings
from ldm.param_count import model_params
from ldm.run_checks import geometry_from_config
from ldm.util import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")
CKPT = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
GIB = 2 ** 30


@pytest.mark.parametrize("config", ["tiny-v1.yaml", "tiny-shapes-v2.yaml", "v1-inference.yaml",
                                    "v2-vpred-inference.yaml"])
def test_parameter_counts_match_the_built_models(config):
    from ldm.models.latent_diffusion import build_model
    cfg = load_config(os.path.join(REPO, "configs", config))
    model = build_model(cfg, lazy_init=True)
    built = {"unet": 0, "vae": 0, "text": 0}
    for p in model.get_parameters():
        part = "unet" if p.name.startswith("model.") else "vae" if p.name.startswith("first_stage_model.") else "text"
        built[part] += int(np.prod(p.shape))
    assert model_params(cfg) == built


def _peak_gib(argv, env=None):
    """Peak resident memory (GiB) of one text_to_image.py process, its exit code and stderr (measured by
    tests/peak_rss.py: a child forked straight from this large process would report this process's size)."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "peak_rss.py"), sys.executable,
                           "text_to_image.py", *argv], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, GLOG_v="3", **(env or {})), timeout=900)
    fields = proc.stdout.split()
    kib, code = int(fields[fields.index("PEAK_KIB") + 1]), int(fields[fields.index("EXIT") + 1])
    return code, kib / 2 ** 20, proc.stderr


# (size, images, attention): the tiny shapes model (VAE factor 4) where its attention is large: 384 px is
# 96x96 latents, 9216 tokens, 1.4 GB of scores per guided call when standard (64 px with 4 images: below)
POINTS = [(384, 1, "standard"), (384, 1, "chunked")]
SLACK = 2.5          # measured 2026-12-06: 1.6x (384 standard), 2.2x (384 chunked), 2.2x (256 px, 4 images)


def _bound(size, images, mode, peak, slack=SLACK):
    """The estimate is at least the measured peak, and (where the model's own memory matters, not only the
    runtime's fixed part) at most ``slack`` times it."""
    geometry, params = geometry_from_config(CONFIG), memory_estimate.config_param_count(CONFIG)
    est = memory_estimate.estimate(geometry, size, size, images, True, os.path.getsize(CKPT), params,
                                   AttentionSettings(mode)).total / GIB
    assert peak <= est <= (slack or float("inf")) * peak, (size, images, mode, peak, est)
    return est


def test_estimate_bounds_the_measured_peak(tmp_path):
    rows = []
    for size, images, mode in POINTS:
        code, peak, err = _peak_gib(["--config", CONFIG, "--ckpt_path", CKPT, "--W", str(size), "--H", str(size),
                                     "--n_samples", str(images), "--n_iter", "1", "--sampling_steps", "1",
                                     "--attention", mode, "--skip_grid", "--output_path",
                                     str(tmp_path / f"{size}-{mode}")])
        assert code == 0, err[-2000:]
        rows.append((size, images, mode, round(peak, 2), round(_bound(size, images, mode, peak), 2)))
    print("size, images, attention, measured GiB, estimated GiB:", rows)
    # the estimate knows the attention mode: standard holds the whole score tensor, chunked one chunk
    assert rows[0][4] > rows[1][4] and rows[0][3] > rows[1][3]


def test_plan_slices_the_batch_and_refuses_what_cannot_fit():
    geometry = geometry_from_config(os.path.join(REPO, "configs", "v2-vpred-inference.yaml"))
    params = memory_estimate.config_param_count(os.path.join(REPO, "configs", "v2-vpred-inference.yaml"))
    auto = AttentionSettings("auto")
    whole = memory_estimate.plan(geometry, 768, 768, 4, True, 5 * GIB, params, auto, available=64 * GIB)
    assert (whole.unet_batch, whole.vae_batch) == (None, None) and not whole.sliced
    sliced = memory_estimate.plan(geometry, 768, 768, 4, True, 5 * GIB, params, auto, available=21 * GIB)
    assert sliced.sliced and sliced.vae_batch == 1 and sliced.unet_batch in (1, 2)
    assert sliced.estimate.total <= 21 * GIB < sliced.whole.total
    with pytest.raises(memory_estimate.UserError, match="even one image at a time"):
        memory_estimate.plan(geometry, 768, 768, 4, True, 5 * GIB, params, auto, available=12 * GIB)
    with pytest.raises(memory_estimate.UserError, match="--attention chunked"):
        memory_estimate.plan(geometry, 768, 768, 1, True, 5 * GIB, params, AttentionSettings("standard"),
                             available=18 * GIB)
    # an fp16 file is half the weights' size: the estimate counts the parameters, not the file
    fp16 = memory_estimate.estimate(geometry, 512, 512, 1, True, 2.6 * GIB, params, auto)
    assert fp16.weights == 4 * params


def test_micro_batches_give_the_same_pictures(tmp_path):
    """MSD_MEMORY_LIMIT caps the memory the plan sees: the same run under a cap that forces one image per
    call writes the same pictures (up to the kernels' rounding: measured 1/255 on 0.01% of the pixels),
    with one INFO line saying so."""
    geometry, params = geometry_from_config(CONFIG), memory_estimate.config_param_count(CONFIG)
    size, images = 64, 4
    one = memory_estimate.estimate(geometry, size, size, images, True, os.path.getsize(CKPT), params,
                                   AttentionSettings("auto"), unet_batch=1, vae_batch=1).total
    argv = ["--config", CONFIG, "--ckpt_path", CKPT, "--W", str(size), "--H", str(size), "--n_samples", str(images),
            "--n_iter", "1", "--sampling_steps", "2", "--skip_grid"]
    code, peak, err_whole = _peak_gib(argv + ["--output_path", str(tmp_path / "whole")])
    assert code == 0 and "memory:" not in err_whole, err_whole[-2000:]
    _bound(size, images, "auto", peak, slack=None)      # a third size, where the fixed part is most of it
    code, _, err = _peak_gib(argv + ["--output_path", str(tmp_path / "sliced")],
                             env={"MSD_MEMORY_LIMIT": str(one + 2 ** 20)})
    assert code == 0, err[-2000:]
    lines = [line for line in err.splitlines() if "memory:" in line]
    assert len(lines) == 1 and "the UNet runs on 1 and the VAE decodes 1 image(s) at a time" in lines[0], err
    from PIL import Image
    names = sorted(os.listdir(tmp_path / "whole" / "samples"))
    assert names == sorted(os.listdir(tmp_path / "sliced" / "samples")) and len(names) == images
    for name in names:       # MindSpore's CPU kernels round a batch of 2 and of 8 differently: 1/255 at most
        a, b = (np.asarray(Image.open(tmp_path / run / "samples" / name)).astype(int) for run in ("whole", "sliced"))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, name
    code, _, err = _peak_gib(argv + ["--output_path", str(tmp_path / "refused")], env={"MSD_MEMORY_LIMIT": "100M"})
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "even one image at a time" in lines[0], err
    assert not os.path.exists(tmp_path / "refused")
