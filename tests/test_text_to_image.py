"""text_to_image.py end to end on the tiny converted SD2 pipeline (CPU, 64 px, few steps)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

import text_to_image
from pipeline_models import REPO, converted


def pngs(folder):
    names = sorted(os.listdir(os.path.join(folder, "samples")))
    return names, [open(os.path.join(folder, "samples", n), "rb").read() for n in names]


@pytest.fixture(scope="module")
def model_args():
    config, ckpt = converted("sd2")
    return ["--config", config, "--ckpt_path", ckpt, "--W", "64", "--H", "64", "--sampling_steps", "3",
            "--scale", "5", "--negative_prompt", "blurry"]


@pytest.fixture(scope="module")
def first_run(model_args, tmp_path_factory):
    """One run in a separate process: 2 prompts x n_samples 2 from a prompt file, n_iter 1."""
    base = tmp_path_factory.mktemp("t2i")
    prompts = base / "prompts.txt"
    prompts.write_text("a red cube on a table\n\na blue ball\na green tree\n")
    args = model_args + ["--data_path", str(prompts), "--n_samples", "2", "--dpm_solver", "--seed", "5"]
    out = str(base / "run1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "text_to_image.py")] + args + ["--output_path", out],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, args, out


def test_layout_and_manifest(first_run):
    base, args, out = first_run
    names, _ = pngs(out)
    assert names == ["00000.png", "00001.png", "00002.png"]
    img = Image.open(os.path.join(out, "samples", "00000.png"))
    assert img.size == (64, 64) and img.mode == "RGB"
    records = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"), encoding="utf-8")]
    assert [(r["prompt"], r["seed"], r["sampler"], r["steps"], r["scale"]) for r in records] == [
        ("a red cube on a table", 5, "dpm_solver", 3, 5.0), ("a blue ball", 6, "dpm_solver", 3, 5.0),
        ("a green tree", 7, "dpm_solver", 3, 5.0)]
    assert os.path.isfile(os.path.join(out, "manifest.csv"))
    assert os.path.isfile(os.path.join(out, "grid-00000.png"))


def test_same_seed_same_bytes_other_seed_other_images(first_run):
    base, args, out = first_run
    again = str(base / "run2")
    assert text_to_image.main(args + ["--output_path", again]) == 0     # second run, in this process
    assert pngs(again) == pngs(out)
    other = str(base / "run3")
    assert text_to_image.main(args[:-1] + ["6", "--output_path", other, "--skip_grid"]) == 0
    a = np.asarray(Image.open(os.path.join(out, "samples", "00000.png")), dtype=np.int16)
    b = np.asarray(Image.open(os.path.join(other, "samples", "00000.png")), dtype=np.int16)
    assert np.abs(a - b).mean() > 5
    assert not os.path.exists(os.path.join(other, "grid-00000.png"))


def test_resume_writes_nothing_new(first_run):
    base, args, out = first_run
    before = pngs(out)
    os.remove(os.path.join(out, "samples", "00002.png"))
    assert text_to_image.main(args + ["--output_path", out, "--resume"]) == 0
    assert pngs(out) == before


def test_init_latents_img2img_and_intermediates(model_args, tmp_path):
    z = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    out = str(tmp_path / "lat")
    assert text_to_image.main(model_args + ["--prompt", "a cat", "--init_latents", str(tmp_path / "z.npy"),
                                            "--sampler", "ddim", "--output_path", out, "--skip_grid",
                                            "--save_intermediates", "1"]) == 0
    steps = sorted(os.listdir(os.path.join(out, "intermediates", "00000")))
    assert steps == ["000.png", "001.png", "002.png"]
    # img2img from the image just made: strength 0.5 keeps it closer than a fresh sample
    init = os.path.join(out, "samples", "00000.png")
    out2 = str(tmp_path / "i2i")
    assert text_to_image.main(model_args + ["--prompt", "a cat", "--init_image", init, "--strength", "0.5",
                                            "--sampling_steps", "4", "--output_path", out2, "--skip_grid"]) == 0
    src = np.asarray(Image.open(init), dtype=np.int16)
    res = np.asarray(Image.open(os.path.join(out2, "samples", "00000.png")), dtype=np.int16)
    assert res.shape == src.shape and np.abs(res - src).mean() < 40


def test_config_checkpoint_mismatch_is_one_line(tmp_path):
    config, ckpt = converted("sd2")
    with open(config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["params"]["unet_config"]["params"]["model_channels"] = 64     # twice the checkpoint's width
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "text_to_image.py"), "--config", str(wrong),
                           "--ckpt_path", ckpt, "--W", "64", "--H", "64", "--output_path",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out" / "manifest.jsonl")
