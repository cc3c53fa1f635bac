"""Text -> image with Stable Diffusion 1.x / 2.x (eps or v), MindONE's flags.

    python text_to_image.py --version 2.1-v --ckpt_path models/sd_v2-1_768_v-061732d1.ckpt \\
        --prompt "a red bicycle" --negative_prompt "blurry" --dpm_solver --sampling_steps 15 --scale 9
    python text_to_image.py --data_path prompts.txt --n_samples 4 --output_path out/ --resume

Images go to {output_path}/samples/00000.png ..., with manifest.jsonl / manifest.csv (prompt, seed,
sampler, steps, scale, size, checkpoint per image) and a grid PNG unless --skip_grid.
"""
import argparse
import os
import sys

from ldm.diffusion.samplers import SAMPLER_NAMES as SAMPLERS
from ldm.errors import UserError, run_cli

REPO = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {  # --version -> (default config, default checkpoint (MindONE's file names), default size)
    "1.5": ("configs/v1-inference.yaml", "models/sd_v1.5-d0ab7146.ckpt", 512),
    "2.0": ("configs/v2-inference.yaml", "models/sd_v2_base-57526ee4.ckpt", 512),
    "2.0-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2_768_v-e12e3a9b.ckpt", 768),
    "2.1": ("configs/v2-inference.yaml", "models/sd_v2-1_base-7c8d09ce.ckpt", 512),
    "2.1-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2-1_768_v-061732d1.ckpt", 768),
}
SAMPLER_FLAGS = ("dpm_solver", "plms", "uni_pc", "ddim")   # MindONE's switches, in precedence order


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def build_parser():
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", default="A cute wolf in winter forest", help="the prompt (ignored with --data_path)")
    g.add_argument("--data_path", default=None, help="prompt file, one prompt a line (streamed)")
    g.add_argument("--negative_prompt", default="", help="negative prompt for classifier-free guidance")
    g = p.add_argument_group("model")
    g.add_argument("--version", default=os.environ.get("SD_VERSION", "2.0"), choices=sorted(VERSIONS),
                   help="SD version; picks the default --config, --ckpt_path and size")
    g.add_argument("--config", default=None,
                   help="model YAML (default: the model_config.yaml saved beside a checkpoint from our training, "
                        "else the one of --version); it must agree with the diffusion spec such a checkpoint records")
    g.add_argument("--ckpt_path", default=None, help="checkpoint: MindSpore/torch .ckpt, .safetensors "
                   "(default: MindONE's file name for --version under models/)")
    g.add_argument("--lora_ckpt_path", default=None, help="LoRA weights to apply")
    g.add_argument("--lora_scale", type=float, default=1.0, help="LoRA strength")
    g = p.add_argument_group("sampling")
    g.add_argument("--W", type=int, default=None, help="image width, multiple of 8 (default: 512, 768 for -v)")
    g.add_argument("--H", type=int, default=None, help="image height, multiple of 8 (default: 512, 768 for -v)")
    g.add_argument("--sampling_steps", type=int, default=50, help="number of sampling steps")
    g.add_argument("--scale", type=float, default=9.0, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--guidance_rescale", type=float, default=None,
                   help="guidance rescale phi (default: 0.7 for a zero-terminal-SNR model, else 0)")
    g.add_argument("--ddim_eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 DDPM-like)")
    for name in SAMPLER_FLAGS:
        g.add_argument(f"--{name}", action="store_true", help=f"use the {name} sampler")
    g.add_argument("--sampler", default=None, help="sampler by name (overrides the switches): " + ", ".join(SAMPLERS))
    g.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="timestep spacing (default: trailing for a zero-terminal-SNR model, else the sampler's own)")
    g.add_argument("--rescale_zero_snr", type=str2bool, nargs="?", const=True, default=None,
                   help="override the model's zero-terminal-SNR setting (default: what the config or the "
                        "checkpoint's recorded spec says)")
    g = p.add_argument_group("randomness")
    g.add_argument("--seed", type=int, default=42, help="image i of the run uses seed + i")
    g.add_argument("--fixed_code", action="store_true", help="the same start noise for every batch")
    g.add_argument("--init_latents", default=None, help=".npy unit-variance start noise (n_samples, 4, H/8, W/8)")
    g = p.add_argument_group("batching and output")
    g.add_argument("--n_iter", type=int, default=1, help="how many times to go over the prompts")
    g.add_argument("--n_samples", type=int, default=1, help="batch size (images per prompt with --prompt)")
    g.add_argument("--output_path", default="output", help="output folder")
    g.add_argument("--skip_grid", action="store_true", help="do not write the grid PNG")
    g.add_argument("--skip_save", action="store_true", help="do not write the individual images")
    g.add_argument("--save_intermediates", type=int, default=0, metavar="K",
                   help="also save every K-th step's predicted x0 as images (0 = off)")
    g.add_argument("--resume", action="store_true", help="skip images already written by the same run")
    g = p.add_argument_group("img2img")
    g.add_argument("--init_image", default=None, help="start from this image (img2img)")
    g.add_argument("--strength", type=float, default=0.8, help="img2img: how much of the schedule to run")
    g = p.add_argument_group("runtime")
    g.add_argument("--ms_mode", type=int, default=1, choices=(0, 1), help="0 graph, 1 pynative (UNet is jit-compiled either way)")
    g.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"), help="MindSpore device")
    return p


def choose_sampler(args):
    if args.sampler:
        if args.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        return args.sampler
    for name in SAMPLER_FLAGS:
        if getattr(args, name):
            return name
    return "ddim"


def resolve_paths(args):
    """(config, checkpoint, default size) from --version / --config /
    --ckpt_path, checked to exist. Without --config, a model_config.yaml that our training saved
    beside the checkpoint is the config (it states the spec the checkpoint was trained with)."""
    config, ckpt, size = VERSIONS[args.version]
    ckpt = args.ckpt_path or os.path.join(REPO, ckpt)
    if args.config:
        config = args.config
    else:
        beside = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "model_config.yaml")
        config = beside if args.ckpt_path and os.path.isfile(beside) else os.path.join(REPO, config)
    if not os.path.isfile(config):
        raise UserError(f"config file not found: {config}")
    if not os.path.exists(ckpt):
        raise UserError(f"checkpoint not found: {ckpt} (give --ckpt_path)")
    return config, ckpt, size


def settings_from_args(args):
    from ldm.io.images import check_image_size
    from ldm.io.prompts import check_prompt_file
    from ldm.pipeline_run import RunSettings
    sampler = choose_sampler(args)
    config, ckpt, size = resolve_paths(args)
    width, height = args.W or size, args.H or size
    check_image_size(width, height)
    if args.data_path:
        check_prompt_file(args.data_path)
    for name in ("n_iter", "n_samples", "sampling_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    options = {"timestep_spacing": args.timestep_spacing} if args.timestep_spacing else {}
    return RunSettings(prompt=args.prompt, data_path=args.data_path, negative_prompt=args.negative_prompt,
                       width=width, height=height, steps=args.sampling_steps, sampler=sampler,
                       scale=args.scale, guidance_rescale=args.guidance_rescale, eta=args.ddim_eta,
                       seed=args.seed, n_iter=args.n_iter, n_samples=args.n_samples, fixed_code=args.fixed_code,
                       sampler_options=options, init_latents=args.init_latents, init_image=args.init_image,
                       strength=args.strength, save_intermediates=args.save_intermediates, checkpoint=ckpt,
                       config=config, lora=args.lora_ckpt_path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)          # every cheap check before the model is built
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if args.ms_mode == 0 else ms.PYNATIVE_MODE)
    ms.set_device(args.device_target)
    from ldm.pipeline import Text2ImagePipeline
    from ldm.pipeline_run import run_to_folder
    pipe = Text2ImagePipeline.from_config(settings.config, settings.checkpoint,
                                          lora_path=args.lora_ckpt_path, lora_scale=args.lora_scale,
                                          adopt_recorded_spec=not args.config,
                                          rescale_zero_snr=args.rescale_zero_snr)
    summary = run_to_folder(pipe, settings, args.output_path, skip_grid=args.skip_grid,
                            skip_save=args.skip_save, resume=args.resume,
                            log=lambda msg: print(msg, file=sys.stderr))
    for key in ("manifest", "csv", "grid"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
