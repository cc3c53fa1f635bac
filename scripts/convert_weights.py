#!/usr/bin/env python
"""Convert Stable Diffusion weights between layouts, without PyTorch.

  to our MindSpore .ckpt (MindONE names):
    python scripts/convert_weights.py --source SD_FOLDER_OR_FILE --target out.ckpt [--config CFG] [--config_out out.yaml]
  back to diffusers names: one .safetensors with unet./vae./text_encoder. prefixes, or a diffusers folder
    python scripts/convert_weights.py --source ours.ckpt --config CFG --target out.safetensors --to diffusers
    python scripts/convert_weights.py --source ours.ckpt --config CFG --target sd_folder --to diffusers
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.errors import UserError, run_cli  # noqa: E402


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes become one UserError line (run_cli prints it), not a usage block."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def parse_args(argv):
    p = OneLineParser(allow_abbrev=False,
        description="Convert Stable Diffusion 1.x/2.x weights (Stability/CompVis .ckpt or .safetensors, "
                    "diffusers folder, MindSpore .ckpt) to our MindSpore checkpoint, or back to diffusers names. "
                    "The result is checked by loading it into the model the config describes.")
    p.add_argument("--source", required=True,
                   help="input: a diffusers folder (unet/ vae/ text_encoder/ with config.json files), or a "
                        "Stability/CompVis .ckpt/.safetensors, or a MindSpore .ckpt (MindONE names)")
    p.add_argument("--target", required=True,
                   help="output, written atomically: a MindSpore .ckpt (--to mindspore); with --to diffusers "
                        "a .safetensors file (single file, unet./vae./text_encoder. prefixes) or, for any other "
                        "name, a new diffusers folder loadable by StableDiffusionPipeline.from_pretrained")
    p.add_argument("--config", default=None,
                   help="model YAML describing the weights (e.g. configs/v2-vpred-inference.yaml); required for "
                        "single-file sources, optional for a diffusers folder (derived from its config files)")
    p.add_argument("--config_out", default=None,
                   help="also write the model YAML used (for a diffusers folder: the one derived from it)")
    p.add_argument("--to", choices=("mindspore", "diffusers"), default="mindspore",
                   help="mindspore: our .ckpt with MindONE parameter names (default); diffusers: "
                        "diffusers/transformers names (file or folder, see --target)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                   help="storage precision of a MindSpore .ckpt target: fp16 halves the file (weights are "
                        "cast back to the model's dtype on load)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ldm.convert.convert_weights import convert_weights
    summary = convert_weights(args.source, args.target, config=args.config, config_out=args.config_out,
                              to=args.to, dtype=args.dtype)
    print(summary)
    return 0


if __name__ == "__main__":
    run_cli(main)
