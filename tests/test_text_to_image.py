"""text_to_image.py end to end on the tiny converted SD2 pipeline (CPU, 64 px, few steps).

One run goes through the real CLI in its own process; the reruns parse the same flags with the
CLI's parser and run them in this process on one shared pipeline (so graphs compile once).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

import text_to_image
from ldm.pipeline_run import run_to_folder
from pipeline_models import REPO, converted, pipeline


def pngs(folder):
    names = sorted(os.listdir(os.path.join(folder, "samples")))
    return names, [open(os.path.join(folder, "samples", n), "rb").read() for n in names]


def read_png(path):
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.fixture(scope="module")
def model_args():
    config, ckpt = converted("sd2")
    return ["--config", config, "--ckpt_path", ckpt, "--W", "64", "--H", "64", "--sampling_steps", "3",
            "--scale", "5", "--negative_prompt", "blurry", "--n_iter", "1"]


@pytest.fixture
def pipe():
    return pipeline("sd2", "eps")


def run_here(pipe, args, **kw):
    """What text_to_image.main does after building the model, on the shared pipeline."""
    parsed = text_to_image.build_parser().parse_args(args)
    settings = text_to_image.settings_from_args(parsed)
    return run_to_folder(pipe, settings, parsed.output_path, skip_grid=parsed.skip_grid,
                         skip_save=parsed.skip_save, resume=parsed.resume, progress=False,
                         log=lambda m: None, **kw)


@pytest.fixture(scope="module")
def first_run(model_args, tmp_path_factory):
    """The real CLI in a separate process: 4 prompts from a file packed in batches of 2 (every batch of
    these tests has 2 images, so the shared pipeline compiles one set of graphs)."""
    base = tmp_path_factory.mktemp("t2i")
    prompts = base / "prompts.txt"
    prompts.write_text("a red cube on a table\n\na blue ball\na green tree\nsunset over the sea\n")
    args = model_args + ["--data_path", str(prompts), "--pack_prompts", "--n_samples", "2", "--sampler", "dpm_solver",
                         "--seed", "5"]
    out = str(base / "run1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "text_to_image.py")] + args + ["--output_path", out],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, args, out


def test_layout_and_manifest(first_run):
    base, args, out = first_run
    names, _ = pngs(out)
    assert names == ["00000.png", "00001.png", "00002.png", "00003.png"]
    img = Image.open(os.path.join(out, "samples", "00000.png"))
    assert img.size == (64, 64) and img.mode == "RGB"
    records = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"), encoding="utf-8")]
    assert [(r["prompt"], r["seed"], r["sampler"], r["steps"], r["scale"], r["width"]) for r in records] == [
        ("a red cube on a table", 5, "dpm_solver", 3, 5.0, 64), ("a blue ball", 6, "dpm_solver", 3, 5.0, 64),
        ("a green tree", 7, "dpm_solver", 3, 5.0, 64), ("sunset over the sea", 8, "dpm_solver", 3, 5.0, 64)]
    assert records[0]["checkpoint"].endswith("tiny_sd2.ckpt")
    assert os.path.isfile(os.path.join(out, "manifest.csv"))
    assert os.path.isfile(os.path.join(out, "grid-00000.png"))


def test_same_seed_same_bytes_other_seed_other_images(first_run, pipe):
    base, args, out = first_run
    again = str(base / "run2")
    run_here(pipe, args + ["--output_path", again])
    assert pngs(again) == pngs(out)
    other = str(base / "run3")
    run_here(pipe, args[:-1] + ["6", "--output_path", other, "--skip_grid"])
    diff = np.abs(read_png(os.path.join(out, "samples", "00000.png")) -
                  read_png(os.path.join(other, "samples", "00000.png")))
    assert diff.mean() > 5
    assert not os.path.exists(os.path.join(other, "grid-00000.png"))


def test_resume_redoes_only_what_is_missing(first_run, pipe):
    base, args, out = first_run
    before = pngs(out)
    os.remove(os.path.join(out, "samples", "00002.png"))
    summary = run_here(pipe, args + ["--output_path", out, "--resume"])
    assert (summary["written"], summary["skipped"]) == (1, 3)
    assert pngs(out) == before


def test_init_latents_and_intermediates(model_args, pipe, tmp_path):
    z = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    out = str(tmp_path / "lat")
    run_here(pipe, model_args + ["--prompt", "a cat", "--n_samples", "2", "--init_latents", str(tmp_path / "z.npy"),
                                 "--sampler", "ddim", "--output_path", out, "--skip_grid", "--save_intermediates", "1"])
    assert sorted(os.listdir(os.path.join(out, "intermediates", "00001"))) == ["000.png", "001.png", "002.png"]
    # the same latents through the Python API give the same image
    api = pipe("a cat", negative_prompt="blurry", width=64, height=64, steps=3, sampler="ddim", scale=5.0, latents=z)
    assert np.array_equal(api[1], read_png(os.path.join(out, "samples", "00001.png")))
    # the last intermediate is the decoded final x0 (DDIM's last step returns its x0 prediction)
    last = read_png(os.path.join(out, "intermediates", "00001", "002.png"))
    assert np.abs(last - api[1]).max() <= 1


def test_img2img_runs_the_kept_part_of_the_schedule(pipe, tmp_path):
    rng = np.random.default_rng(3)
    calls = []
    original = pipe._run

    def counting(name, *args):
        calls.append(name)
        return original(name, *args)
    pipe._run = counting
    try:
        a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
        kw = dict(num_images=2, negative_prompt="", width=64, height=64, steps=4, sampler="euler", scale=5.0, seed=1, strength=0.5)
        out_a = pipe("a cat", init_image=a, **kw)
        assert calls.count("encode") == 1 and calls.count("guided") == 2        # int(4 * 0.5) steps
        out_a2 = pipe("a cat", init_image=a, **kw)
        out_b = pipe("a cat", init_image=b, **kw)
    finally:
        pipe._run = original
    assert np.array_equal(out_a, out_a2)
    assert np.abs(out_a.astype(int) - out_b).mean() > 1


def test_config_checkpoint_mismatch_is_one_line(tmp_path):
    config, ckpt = converted("sd2")
    with open(config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["params"]["unet_config"]["params"]["model_channels"] = 64     # twice the checkpoint's width
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "text_to_image.py"), "--config", str(wrong),
                           "--ckpt_path", ckpt, "--W", "64", "--H", "64", "--sampler", "ddim", "--output_path",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out" / "manifest.jsonl")
