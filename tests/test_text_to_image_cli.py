"""text_to_image.py's flags and bad-input handling: one clear stderr line, exit code != 0, no output."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "text_to_image.py")

MINDONE_FLAGS = ("--prompt", "--data_path", "--negative_prompt", "--config", "--ckpt_path", "--version",
                 "--output_path", "--W", "--H", "--seed", "--n_iter", "--n_samples", "--sampling_steps",
                 "--scale", "--ddim_eta", "--fixed_code", "--skip_grid", "--skip_save", "--ddim", "--plms",
                 "--dpm_solver", "--uni_pc", "--sampler", "--timestep_spacing", "--rescale_zero_snr",
                 "--guidance_rescale", "--init_latents", "--lora_ckpt_path", "--lora_scale",
                 "--save_intermediates", "--ms_mode", "--device_target", "--init_image", "--strength",
                 "--resume")


def run(args, cwd):
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_every_flag(tmp_path):
    proc = run(["-h"], tmp_path)
    assert proc.returncode == 0
    for flag in MINDONE_FLAGS:
        assert flag in proc.stdout, flag


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("model: {target: ldm.models.latent_diffusion.LatentDiffusion}\n")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read before the cheap checks pass")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    return dict(config=str(config), ckpt=str(ckpt), prompts=str(prompts))


@pytest.mark.parametrize("case, extra, message", [
    ("width", ["--W", "100"], "width must be a positive multiple of 8, got 100"),
    ("height", ["--H", "-8"], "height must be a positive multiple of 8"),
    ("sampler", ["--sampler", "fancy"], "unknown sampler 'fancy'"),
    ("checkpoint", ["--ckpt_path", "nowhere.ckpt"], "checkpoint not found: nowhere.ckpt"),
    ("config", ["--config", "nowhere.yaml"], "config file not found: nowhere.yaml"),
    ("empty", ["--data_path", "EMPTY"], "holds no prompts"),
    ("prompt file", ["--data_path", "missing.txt"], "prompt file not found"),
    ("steps", ["--sampling_steps", "0"], "--sampling_steps must be >= 1"),
])
def test_bad_input_one_line_nonzero_exit(tmp_path, files, case, extra, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    extra = [str(empty) if a == "EMPTY" else a for a in extra]
    args = ["--config", files["config"], "--ckpt_path", files["ckpt"], "--W", "64", "--H", "64",
            "--output_path", str(tmp_path / "out")]
    proc = run(args + extra, tmp_path)
    assert proc.returncode != 0, case
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
