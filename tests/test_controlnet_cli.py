"""controlnet_image2image.py: MindONE's flags and ours in -h (each documented in docs/controlnet.md), a real run on
the demo model with a ControlNet made for it (canny edges of a photo, manifest, control map), and every bad input
as one stderr line with exit 2 (a table run in one child interpreter, tests/cli_table.py)."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import cli_setups
import controlnet_helpers as H
from cli_table import REPO, failures, run_table

SCRIPT = "controlnet_image2image.py"
MINDONE_FLAGS = ("--log_level", "--output_path", "--input_image", "--task_name", "--model_config", "--model_ckpt",
                 "--n_samples", "--image_resolution", "--strength", "--guess_mode", "--sampling_steps", "--scale",
                 "--ddim_eta", "--seed", "--a_prompt", "--n_prompt", "--prompt", "--mode", "--low_threshold",
                 "--high_threshold", "--condition_ckpt_path")
OUR_FLAGS = ("--controlnet", "--control_image", "--detector", "--canny_low", "--canny_high", "--canny_sigma",
             "--controlnet_conditioning_scale", "--control_guidance_start", "--control_guidance_end", "--sampler",
             "--W", "--H", "--config", "--ckpt_path", "--negative_prompt", "--data_path", "--n_iter", "--resume")
BASE = ["--config", "{repo}/configs/tiny-shapes-controlnet.yaml", "--ckpt_path", "{repo}/models/tiny_shapes_base.ckpt",
        "--image_resolution", "32", "--sampling_steps", "2", "--n_samples", "1"]
STAND_IN = ["--controlnet", "{repo}/models/tiny_shapes_base.ckpt"]   # exists; read only after the cheap checks
PHOTO = ["--input_image", "{tmp}/photo.png"]
OUT = ["--output_path", "{tmp}/out", "--task_name", "run"]


def case(name, extra, expect, setup="cn_files", controlnet=STAND_IN, control=PHOTO):
    return dict(name=name, script=SCRIPT, argv=BASE + controlnet + control + OUT + extra, expect=expect,
                absent=["{tmp}/out"], setup=setup)


CASES = [
    # ---- control images
    case("no control image", [], "no control image: give --control_image", control=[]),
    case("control image missing", ["--control_image", "{tmp}/nowhere.png"], "nowhere.png: file not found", control=[]),
    case("input image not an image", [], "text.png cannot be decoded", control=["--input_image", "{tmp}/text.png"]),
    case("control image a folder", ["--control_image", "{tmp}"], "not a regular file", control=[]),
    case("another aspect ratio", ["--W", "48", "--H", "32"], "is 64x32, the output 48x32: another aspect ratio",
         control=["--control_image", "{tmp}/wide.png"]),
    case("W without H", ["--W", "48"], "give --W and --H together"),
    case("two images, one ControlNet", ["--control_image", "{tmp}/photo.png"], "2 control images for 1 ControlNet"),
    case("segmentation", ["--mode", "segmentation", "--condition_ckpt_path", "{tmp}/deeplab.ckpt"],
         "--mode segmentation: MindONE's DeepLabV3+ detector is not supported"),
    case("unknown detector", ["--detector", "hed"], "argument --detector: invalid choice: 'hed'"),
    case("canny low above high", ["--canny_low", "300"], "--canny_low 300 is above --canny_high 200"),
    case("canny threshold negative", ["--low_threshold=-5"], "--canny_low must be in [0, inf]"),
    case("canny sigma nan", ["--canny_sigma", "nan"], "--canny_sigma must be a finite number"),
    case("image resolution 0", ["--image_resolution", "0"], "--image_resolution must be in [1, 16384]"),
    # ---- control strength
    case("scale nan", ["--controlnet_conditioning_scale", "nan"], "--controlnet_conditioning_scale must be a finite"),
    case("three scales", ["--controlnet_conditioning_scale", "1", "1", "1"],
         "3 values of --controlnet_conditioning_scale for 1 ControlNet"),
    case("strength disagrees", ["--strength", "0.5", "--controlnet_conditioning_scale", "1"], "disagree"),
    case("guidance window empty", ["--control_guidance_start", "0.9", "--control_guidance_end", "0.1"],
         "--control_guidance_start 0.9 must be below --control_guidance_end 0.1"),
    case("guidance end above 1", ["--control_guidance_end", "1.5"], "--control_guidance_end must be in [0, 1]"),
    case("guess mode not a boolean", ["--guess_mode", "maybe"], "argument --guess_mode: expected a boolean"),
    # ---- model files
    case("ControlNet missing", [], "ControlNet not found", controlnet=["--controlnet", "{tmp}/nowhere.pth"]),
    case("checkpoint missing", ["--ckpt_path", "{tmp}/nowhere.ckpt"], "checkpoint not found"),
    case("version", ["--version", "3.0", "--config", "{repo}/configs/tiny-shapes-controlnet.yaml"],
         "unknown --version '3.0'"),
    case("no ControlNet weights in the file", [], "holds no ControlNet weights"),
    case("no ControlNet and none in the checkpoint", [], "holds no ControlNet weights", controlnet=[]),
    case("ControlNet for another base", [], "was made for a 32-wide text encoder (text context width 32); the base "
         "model is a 64-wide", setup="cn_other_base", controlnet=["--controlnet", "{tmp}/other_base.ckpt"]),
    # ---- the run's other settings
    case("size not a multiple", ["--W", "36", "--H", "24"], "--W (width) must be a positive multiple of 8"),
    case("steps 0", ["--sampling_steps", "0"], "--sampling_steps must be in [1, 1000]"),
    case("scale nan", ["--scale", "nan"], "--scale must be a finite number"),
    case("unknown sampler", ["--sampler", "fancy"], "unknown sampler 'fancy'"),
    case("n_samples 0", ["--n_samples", "0"], "--n_samples must be in [1, inf]"),
    case("output is a file", ["--output_path", "{tmp}/photo.png", "--task_name", ""], "exists and is not a folder"),
    dict(case("resume with another control image", ["--resume"], "was made with control_images=",
              setup="cn_other_control_run"), absent=[]),
]


def test_help_lists_every_flag_and_docs_explain_them():
    import controlnet_image2image as cli
    text = cli.build_parser().format_help()
    for flag in MINDONE_FLAGS + OUR_FLAGS:
        assert flag in text, flag
    with open(os.path.join(REPO, "docs", "controlnet.md"), encoding="utf-8") as f:
        doc = f.read()
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_]*)", text)) - {"--help"}
    missing = sorted(f for f in flags if f"`{f}" not in doc)
    assert not missing, f"flags missing from docs/controlnet.md: {missing}"


def test_bad_inputs_are_one_line_exit_2():
    results = run_table(CASES, timeout=600)
    assert not failures(CASES, results), "\n".join(failures(CASES, results))


def test_run_canny_on_the_demo_model(tmp_path, monkeypatch):
    """MindONE's command line on the demo model: --input_image through canny, the size from --image_resolution,
    --a_prompt appended; images, grid, manifest with the control settings, and the control map as used."""
    import controlnet_image2image as cli
    from ldm.data.canny import canny
    monkeypatch.chdir(tmp_path)
    cli_setups.cn_files(str(tmp_path))
    H.tiny_shapes_controlnet(str(tmp_path / "cn.ckpt"))
    argv = ["--model_config", H.TINY_CONFIG, "--model_ckpt", H.TINY_BASE, "--controlnet", "cn.ckpt",
            "--input_image", "photo.png", "--image_resolution", "32", "--prompt", "a red circle",
            "--sampling_steps", "2", "--n_samples", "2", "--strength", "0.8", "--output_path", "out",
            "--ms_mode", "1", "--log_level", "WARNING"]
    assert cli.main(argv) == 0
    out = tmp_path / "out" / "canny2image"
    images = [np.asarray(Image.open(out / "samples" / f"0000{i}.png")) for i in range(2)]
    assert all(img.shape == (32, 48, 3) for img in images) and (out / "grid-00000.png").exists()
    control = np.asarray(Image.open(out / "control-0.png"))
    photo = np.asarray(Image.open(tmp_path / "photo.png").convert("RGB"))
    assert np.array_equal(control, np.repeat(canny(photo, 100, 200)[..., None], 3, axis=-1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [42, 43]
    rec = records[0]
    assert rec["prompt"] == "a red circle, best quality" and rec["negative_prompt"].startswith("longbody")
    assert rec["controlnets"] == ["cn.ckpt"] and rec["detectors"] == ["canny"] and rec["sampler"] == "mindone_ddim"
    assert rec["controlnet_conditioning_scale"] == [0.8] and rec["canny_low"] == 100.0 and not rec["guess_mode"]


@pytest.mark.parametrize("argv,expect", [(["--strength", "0.5"], [0.5]), (["--controlnet_conditioning_scale", "2"],
                                                                          [2.0])])
def test_strength_is_the_conditioning_scale(argv, expect):
    import controlnet_image2image as cli
    args = cli.build_parser().parse_args(argv)
    assert cli.control_numbers(args, 1)[0] == expect
