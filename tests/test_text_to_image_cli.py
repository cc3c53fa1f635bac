"""text_to_image.py's flags and bad-input handling: one clear stderr line, exit code 2, no output
(the big table of bad inputs is tests/test_text_to_image_bad_inputs.py)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "text_to_image.py")

MINDONE_FLAGS = ("--prompt", "--data_path", "--negative_prompt", "--config", "--ckpt_path", "--version",
                 "--output_path", "--W", "--H", "--seed", "--n_iter", "--n_samples", "--sampling_steps",
                 "--scale", "--ddim_eta", "--fixed_code", "--skip_grid", "--skip_save", "--ddim", "--plms",
                 "--dpm_solver", "--uni_pc", "--lora_ckpt_path", "--lora_scale", "--ms_mode", "--device_target",
                 "--negative_data_path", "--support_long_prompts", "--use_lora", "--lora_rank", "--lora_ft_unet",
                 "--lora_ft_text_encoder", "--ti_ckpt_path", "--n_rows", "--log_level", "--from-file",
                 "--add_watermark", "--check_safety", "--clip_ckpt_path", "--safety_version", "-v VERSION")
OUR_FLAGS = ("--sampler", "--timestep_spacing", "--rescale_zero_snr", "--guidance_rescale", "--init_latents",
             "--save_intermediates", "--init_image", "--strength", "--resume", "--pack_prompts")


def run(args, cwd):
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_every_flag(tmp_path):
    proc = run(["-h"], tmp_path)
    assert proc.returncode == 0
    for flag in MINDONE_FLAGS + OUR_FLAGS:
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


BAD_INPUT = [
    ("width", ["--W", "100"], "--W (width) must be a positive multiple of 64 for this model (VAE factor 8"),
    ("height", ["--H", "-8"], "--H (height) must be a positive multiple of 64"),
    ("sampler", ["--sampler", "fancy"], "unknown sampler 'fancy'"),
    ("checkpoint", ["--ckpt_path", "nowhere.ckpt"], "checkpoint not found: nowhere.ckpt"),
    ("config", ["--config", "nowhere.yaml"], "config file not found: nowhere.yaml"),
    ("empty", ["--data_path", "EMPTY"], "holds no prompts"),
    ("prompt file", ["--data_path", "missing.txt"], "prompt file not found"),
    ("steps", ["--sampling_steps", "0"], "--sampling_steps must be in [1, 1000], got 0"),
    ("wukong", ["-v", "1.5-wukong"], "--version 1.5-wukong: the Chinese Wukong-Huahua model"),
    ("version", ["--version", "3.0"], "unknown --version '3.0'"),
    ("textual inversion", ["--ti_ckpt_path", "x.ckpt"], "checkpoint not found: x.ckpt"),
    ("watermark", ["--add_watermark"], "--add_watermark: the invisible watermark is not supported"),
    ("watermark True", ["--add_watermark", "True"], "the invisible watermark is not supported"),
    ("safety", ["--check_safety", "--clip_ckpt_path", "clip.ckpt"], "--check_safety: the safety checker"),
    ("safety version", ["--safety_version", "3"], "argument --safety_version: invalid choice: 3"),
    ("bool", ["--support_long_prompts", "maybe"], "expected a boolean, got 'maybe'"),
    ("log level", ["--log_level", "logging.LOUD"], "--log_level 'logging.LOUD'"),
    ("n_rows", ["--n_rows", "-1"], "--n_rows must be in [0, inf], got -1"),
    ("from-file", ["--data_path", "PROMPTS", "--from-file", "other.txt"], "name different prompt files"),
    ("negatives", ["--negative_data_path", "NEGATIVES"], "has 2 negative prompt lines for 1 prompt line(s)"),
    ("negatives missing", ["--negative_data_path", "nowhere.txt"], "negative prompt file not found: nowhere.txt"),
    ("lora missing", ["--use_lora", "True", "--lora_ckpt_path", "nowhere.ckpt"], "LoRA checkpoint not found"),
    ("lora nothing", ["--lora_ckpt_path", "PROMPTS", "--lora_ft_unet", "False"], "select no LoRA adapters"),
    ("lora unreadable", ["--lora_ckpt_path", "PROMPTS"], "prompts.txt: "),
    ("ms_mode", ["--ms_mode", "2"], "argument --ms_mode: invalid choice: 2"),
]


def test_bad_input_is_one_line_exit_2(tmp_path, files, capsys):
    """Every case through run_cli(main) in this interpreter: exit 2, one stderr line, no output folder."""
    import text_to_image
    from ldm.errors import run_cli
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("blurry\nugly\n")
    subst = {"EMPTY": str(empty), "PROMPTS": files["prompts"], "NEGATIVES": str(negatives)}
    base = ["--config", files["config"], "--ckpt_path", files["ckpt"], "--W", "64", "--H", "64",
            "--sampler", "ddim", "--output_path", str(tmp_path / "out")]
    for case, extra, message in BAD_INPUT:
        extra = [subst.get(a, a) for a in extra]
        with pytest.raises(SystemExit) as exit_info:
            run_cli(text_to_image.main, base + extra)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert exit_info.value.code == 2, (case, err)
        assert len(lines) == 1 and message in lines[0], (case, err)
        assert not (tmp_path / "out").exists(), case


def test_bad_input_in_a_real_process(tmp_path, files):
    """The same path as a user sees it: a separate process, exit code 2, one line, no traceback."""
    proc = run(["--config", files["config"], "--ckpt_path", files["ckpt"], "-v", "1.5-wukong"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "1.5-wukong" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
