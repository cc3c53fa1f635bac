#!/usr/bin/env python
"""Convert Stable Diffusion weights between layouts, without PyTorch.

  to our MindSpore .ckpt (MindONE names):
    python scripts/convert_weights.py --source SD_FOLDER_OR_FILE --target out.ckpt [--config CFG] [--config_out out.yaml]
  back to diffusers names: one .safetensors with unet./vae./text_encoder. prefixes, or a diffusers folder
    python scripts/convert_weights.py --source ours.ckpt --config CFG --target out.safetensors --to diffusers
    python scripts/convert_weights.py --source ours.ckpt --config CFG --target sd_folder --to diffusers
  our LoRA file to another tool's LoRA .safetensors:
    python scripts/convert_weights.py --source sd-N_lora.ckpt --config CFG --target lora.safetensors --to kohya_lora
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, output_file, output_folder  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402


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
    p.add_argument("--to", choices=("mindspore", "diffusers", "diffusers_lora", "kohya_lora"), default="mindspore",
                   help="mindspore: our .ckpt with MindONE parameter names (default); diffusers: "
                        "diffusers/transformers names (file or folder, see --target); diffusers_lora: --source is "
                        "our LoRA .ckpt (sd-N_lora.ckpt), --target a .safetensors that diffusers' "
                        "load_lora_weights reads (--config required); kohya_lora: the same LoRA as a kohya-ss "
                        ".safetensors (lora_unet_*/lora_te_* with lora_down/lora_up/alpha; conv LoRA as LoCon) for "
                        "A1111, ComfyUI and sd-scripts (--config required; DoRA files are refused)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                   help="storage precision of a MindSpore .ckpt target: fp16 halves the file (weights are "
                        "cast back to the model's dtype on load)")
    return p.parse_args(argv)


def check_args(args):
    """Paths that cannot work fail here, before a multi-GB checkpoint is read."""
    if not os.path.exists(args.source):
        raise UserError(f"source not found: {args.source}")
    if args.config is not None and not os.path.isfile(args.config):
        raise UserError(f"--config not found (or not a file): {args.config}")
    if os.path.abspath(args.target) == os.path.abspath(args.source):
        raise UserError(f"--target {args.target} is the source itself: give a new file name")
    if args.dtype != "fp32" and args.to != "mindspore":
        raise UserError(f"--dtype {args.dtype} applies to a MindSpore .ckpt target only (--to mindspore)")
    if args.to in ("diffusers_lora", "kohya_lora"):
        if args.config is None:
            raise UserError(f"--to {args.to} needs --config (the model YAML the LoRA was trained on)")
        if not args.target.endswith(".safetensors"):
            raise UserError(f"--target {args.target}: a {args.to.split('_')[0]} LoRA file must end in .safetensors")
    folder_target = args.to == "diffusers" and not args.target.endswith(".safetensors")
    if folder_target:
        output_folder(args.target, "--target")
    else:
        output_file(args.target, "--target")
        if args.to == "mindspore" and not args.target.endswith(".ckpt"):
            raise UserError(f"--target {args.target}: a MindSpore checkpoint must end in .ckpt")
    if args.config_out is not None:
        output_file(args.config_out, "--config_out")
        if os.path.abspath(args.config_out) in (os.path.abspath(args.target), os.path.abspath(args.source)):
            raise UserError(f"--config_out {args.config_out} would overwrite the source or the target")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    if args.to in ("diffusers_lora", "kohya_lora"):
        from ldm.convert.lora_formats import export_lora_file
        print(export_lora_file(args.source, args.config, args.target, to=args.to))
        return 0
    from ldm.convert.convert_weights import convert_weights
    summary = convert_weights(args.source, args.target, config=args.config, config_out=args.config_out,
                              to=args.to, dtype=args.dtype)
    print(summary)
    return 0


if __name__ == "__main__":
    run_cli(main)
