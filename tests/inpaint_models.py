"""The tiny inpainting pipelines of the inpainting tests, built once per test session.

The 9-channel model is the txt2img fixture's SD 2.x miniature (tests/fixtures/pipeline/sd2) with the UNet
of tests/fixtures/inpaint (its config, in_channels 9, and its one new weight, conv_in.weight): the diffusers
folder is assembled in a temporary folder and converted by scripts/convert_weights.py, as a user would
convert a diffusers inpainting model. The 4-channel (latent blending) model is the txt2img fixture itself.
"""
import functools
import os
import shutil
import subprocess
import sys
import tempfile

from pipeline_models import PIPELINE_FIXTURES, converted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPAINT_FIXTURES = os.path.join(REPO, "tests", "fixtures", "inpaint")
UNET_FILE = "diffusion_pytorch_model.safetensors"


def assemble_diffusers_folder(out):
    """A diffusers folder of the 9-channel fixture model under ``out``; returns its path."""
    from ldm.convert.readers import read_weight_file, write_safetensors
    folder = os.path.join(out, "sd2-inpainting")
    shutil.copytree(os.path.join(PIPELINE_FIXTURES, "sd2"), folder, ignore=shutil.ignore_patterns("unet"))
    os.makedirs(os.path.join(folder, "unet"))
    shutil.copy(os.path.join(INPAINT_FIXTURES, "unet", "config.json"), os.path.join(folder, "unet", "config.json"))
    weights = read_weight_file(os.path.join(PIPELINE_FIXTURES, "sd2", "unet", UNET_FILE))
    weights.update(read_weight_file(os.path.join(INPAINT_FIXTURES, "conv_in.safetensors")))
    write_safetensors(weights, os.path.join(folder, "unet", UNET_FILE))
    return folder


@functools.lru_cache(maxsize=None)
def converted_inpaint():
    """(config path, checkpoint path) of the 9-channel fixture model, converted from its diffusers folder."""
    out = tempfile.mkdtemp(prefix="inpaint-fixture-")
    source = assemble_diffusers_folder(out)
    ckpt, config = os.path.join(out, "tiny_inpaint.ckpt"), os.path.join(out, "tiny_inpaint.yaml")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"), "--source", source,
                           "--target", ckpt, "--config_out", config], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_weights.py failed on the inpainting fixture: {proc.stderr.strip()[-2000:]}")
    return config, ckpt


@functools.lru_cache(maxsize=None)
def _pipeline(kind):
    from ldm.pipeline_inpaint import InpaintPipeline
    return InpaintPipeline.from_config(*(converted_inpaint() if kind == "inpaint" else converted("sd2")))


def pipeline(kind, prediction_type="eps"):
    """The fixture's InpaintPipeline: ``kind`` "inpaint" (9-channel UNet) or "blend" (the 4-channel txt2img
    model); ``prediction_type`` reads the same weights as an eps or a v model."""
    pipe = _pipeline(kind)
    pipe.model.set_spec(pipe.spec.replace(prediction_type=prediction_type))
    return pipe
