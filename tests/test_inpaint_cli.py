"""inpaint.py: every bad input is one stderr line and exit 2 (and text_to_image.py's one inpainting refusal) (a table run in one child interpreter,
tests/cli_table.py), and a good run on the converted fixture inpainting model writes its images, manifest and
notices. The bad cases fail before a model is built, except the two config/checkpoint mismatches, which fail
while the demo checkpoint loads."""
import json
import os

import pytest

from cli_table import failures, run_table
from inpaint_models import converted_inpaint

SCRIPT = "inpaint.py"
FILES = ["--image", "{tmp}/image.png", "--mask", "{tmp}/mask.png"]
MODEL = ["--config", "{repo}/configs/tiny-inpaint-v2.yaml", "--ckpt_path", "{repo}/models/tiny_shapes_base.ckpt"]
RUN = ["--prompt", "a cat", "--W", "32", "--H", "32", "--sample_steps", "4", "--num_samples", "1", "--batch_size", "1",
       "--output_path", "{tmp}/out"]


def case(name, extra, expect, setup="inp_files", files=True, model=True, run=True, absent=("{tmp}/out/samples",)):
    argv = (FILES if files else []) + (MODEL if model else []) + (RUN if run else []) + extra
    return dict(name=name, script=SCRIPT, argv=argv, expect=expect, setup=setup, absent=list(absent))


CASES = [
    # ---- image and mask files
    case("image missing", ["--image", "{tmp}/nowhere.png"], "image not found: "),
    case("mask missing", ["--mask", "{tmp}/nowhere.png"], "mask not found: "),
    case("image not an image", [], "image.png cannot be decoded", "inp_text_image"),
    case("mask truncated", [], "mask.png cannot be decoded", "inp_truncated_mask"),
    case("mask is a folder", [], "mask.png: not a regular file", "inp_mask_folder"),
    case("no --image", ["--mask", "{tmp}/mask.png"], "the following arguments are required: --image", files=False),
    # ---- sizes
    case("mask of another aspect ratio", [], "aspect ratios differ, so the mask cannot be placed",
         "inp_mask_other_aspect"),
    case("image of another aspect ratio", [], "their aspect ratios differ; give --W/--H", "inp_image_other_aspect"),
    case("aug crop, image too small", ["--aug", "crop"], "is smaller than the output window", "inp_small_image"),
    case("aug none, other size", ["--aug", "none"], "with aug none they must agree"),
    case("aug unknown", ["--aug", "stretch"], "argument --aug: invalid choice: 'stretch'"),
    case("mask_ratio 0", ["--mask_ratio", "0"], "--mask_ratio must be in (0, 1]"),
    case("W not a multiple", ["--W", "30"], "--W (width) must be a positive multiple of 4"),
    case("img_size 0", ["--img_size", "0", "--W", "32", "--H", "32"], "--img_size must be in [1, inf]"),
    # ---- numbers
    case("strength 0", ["--strength", "0"], "--strength must be in (0, 1]"),
    case("strength nan", ["--strength", "nan"], "--strength must be a finite number"),
    case("strength leaves no step", ["--strength", "0.1"], "leaves no step to run"),
    case("num_samples 0", ["--num_samples", "0"], "--num_samples must be in [1, inf]"),
    case("batch_size -1", ["--batch_size=-1"], "--batch_size must be in [1, inf]"),
    case("guidance_scale inf", ["--guidance_scale", "inf"], "--scale must be a finite number"),
    case("steps 0", ["--sample_steps", "0"], "--sampling_steps must be in [1, 1000]"),
    case("seed negative", ["--seed", "-1"], "--seed must be in [0, "),
    # ---- prompts, sampler, version
    case("no prompt", [], "give --prompt (or a prompt file with --data_path)", run=False),
    case("prompt file not UTF-8", ["--data_path", "{tmp}/prompts.txt"], "prompts.txt line 2 is not UTF-8",
         "inp_non_utf8_prompts"),
    case("unknown sampler", ["--sampler", "fancy"], "unknown sampler 'fancy'"),
    case("mindone_plms 3 steps", ["--sample_steps", "3"], "sampler mindone_plms with 3 steps"),
    case("wukong", ["-v", "1.5-wukong"], "Wukong-Huahua inpainting model is not supported", model=False),
    case("version 3", ["-v", "3.0"], "unknown --version '3.0'", model=False),
    # ---- model: config, checkpoint, legacy blending
    case("default checkpoint missing", [], "checkpoint not found", model=False),
    case("text-to-image config", ["--config", "{repo}/configs/tiny-v2.yaml", "--ckpt_path",
                                  "{repo}/models/tiny_shapes_base.ckpt"],
         "describes a text-to-image UNet (4 input channels), not an inpainting one", model=False),
    case("--legacy_blend with an inpainting config", ["--legacy_blend"], "--legacy_blend is for text-to-image"),
    case("text-to-image checkpoint, inpainting config",
         ["--config", "{tmp}/shapes_inpaint.yaml", "--ckpt_path", "{repo}/models/tiny_shapes_base.ckpt"],
         "tiny_shapes_base.ckpt is a text-to-image checkpoint (its UNet takes 4 input channels)",
         "inp_shapes_inpaint_config", model=False),
    case("inpainting checkpoint, text-to-image config",
         ["--config", "{repo}/configs/tiny-shapes-v2.yaml", "--ckpt_path", "{tmp}/inpaint9.safetensors",
          "--legacy_blend"], "inpaint9.safetensors is an inpainting checkpoint (its UNet takes 9 input channels)",
         "inp_inpaint_checkpoint", model=False),
    # ---- output
    case("output_path and save_path differ", ["--save_path", "{tmp}/elsewhere"], "name different folders"),
    case("output is a file", ["--output_path", "{tmp}/image.png"], "exists and is not a folder"),
    case("resume with another mask", ["--resume"], "was made with mask=", "inp_other_mask_run", absent=()),
    dict(name="text_to_image.py img2img with an inpainting model", script="text_to_image.py", setup="inp_files",
         argv=MODEL + ["--W", "32", "--H", "32", "--init_image", "{tmp}/image.png", "--output_path", "{tmp}/out"],
         expect="describes an inpainting model (its UNet takes a mask): for img2img with it use inpaint.py",
         absent=["{tmp}/out"]),
]
GOOD_ARGS = ["--prompt", "a cat", "--negative_prompt", "blurry", "--W", "64", "--H", "64", "--sample_steps", "2",
             "--sampler", "ddim", "--num_samples", "3", "--batch_size", "2", "--strength", "0.5", "--jit_level", "O2"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The bad cases and one good run (last), in one interpreter; the good run writes outside the table's
    folders (they vanish with it)."""
    config, ckpt = converted_inpaint()
    out = str(tmp_path_factory.mktemp("inpaint-cli") / "out")
    good = dict(name="good run", script=SCRIPT, expect="", setup="inp_mask_half_size",
                argv=FILES + ["--config", config, "--ckpt_path", ckpt, "--output_path", out] + GOOD_ARGS)
    return CASES, run_table(CASES + [good]), out


def test_bad_inputs_are_one_line(results):
    cases, res, _ = results
    bad = failures(cases, res[:len(cases)])
    assert not bad, "\n".join(bad)


def test_good_run_writes_images_manifest_and_notices(results):
    cases, res, folder = results
    good = res[len(cases)]
    assert good["code"] == 0, good["stderr"][-3000:]
    err = good["stderr"]
    assert "the mask (32x32) was resized to the image's 64x64" in err
    assert "--num_samples 3 in batches of 2: 4 images per prompt" in err and "--jit_level" in err
    assert "Traceback" not in err
    with open(os.path.join(folder, "manifest.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["seed"] for r in records] == [42, 43, 44, 45]
    assert all(r["inpaint_mode"] == "concat" and r["strength"] == 0.5 and r["mask"].endswith("mask.png")
               for r in records)
    assert sorted(os.listdir(os.path.join(folder, "samples"))) == [f"{i:05d}.png" for i in range(4)]
