"""Inpainting with Stable Diffusion 2.x / 1.5 inpainting models (or latent blending with a text-to-image model):
a drop-in for MindONE's examples/stable_diffusion_v2/inpaint.py.

    python inpaint.py --image photo.png --mask mask.png --prompt "a red bicycle" \\
        --ckpt_path models/sd_v2_inpaint-f694d5cf.ckpt --sampler dpm_solver --sample_steps 25
    python inpaint.py --image photo.png --mask mask.png --data_path prompts.txt --output_path out/ --resume
    python inpaint.py --image photo.png --mask mask.png --prompt "a cat" --config configs/v2-inference.yaml \\
        --ckpt_path models/sd_v2_base-57526ee4.ckpt --legacy_blend

Every flag of MindONE's inpaint.py is accepted with its meaning and default (version 2.0 with
configs/v2-inpaint-inference.yaml, 50 steps of PLMS, guidance 7.5, 512 px, num_samples 4 in batches of 4). The
mask is white where the image is repainted. Images go to {output_path}/samples/00000.png ..., with
manifest.jsonl / manifest.csv and a grid PNG, as text_to_image.py writes them. docs/inpainting.md.
"""
import argparse
import logging
import math
import os
import sys

from ldm.cli_args import OneLineParser, model_files
from ldm.diffusion.samplers import SAMPLER_NAMES
from ldm.errors import UserError, run_cli
from ldm.inpaint_inputs import AUGS
from text_to_image import _bool, parse_log_level

logger = logging.getLogger("inpaint")
REPO = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {  # --version -> (default config, default checkpoint: MindONE's file name for 2.0, Stability's for 1.5)
    "2.0": ("configs/v2-inpaint-inference.yaml", "models/sd_v2_inpaint-f694d5cf.ckpt"),
    "1.5": ("configs/v1-inpaint-inference.yaml", "models/sd-v1-5-inpainting.ckpt"),
}
UNSUPPORTED_VERSIONS = ("1.5-wukong", "1.5_cn")
DEFAULT_SAMPLER = "mindone_plms"        # MindONE's --sampler plms: its port of LDM's PLMS
SAMPLER_ALIASES = {"dpm_solver_pp": "mindone_dpm_solver_pp"}    # MindONE's name that is not one of ours
DEFAULT_OUTPUT = "output/inpaint"


def build_parser():
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("image and mask")
    g.add_argument("--image", required=True, help="the image to inpaint (any format PIL reads; RGB)")
    g.add_argument("--mask", required=True,
                   help="the mask: white (gray >= 128) = repaint, black = keep; read as gray; a mask of another size "
                        "than the image is resized to it when the aspect ratios agree, else refused")
    g.add_argument("--aug", default="resize", choices=AUGS,
                   help="how the image meets the output size: resize (same aspect ratio within 1%%, else refused; "
                        "MindONE stretched), crop (an output-sized window around the mask), resizecrop (a window "
                        "whose mask extent is --mask_ratio of it, resized), none (the image has the output size)")
    g.add_argument("--mask_ratio", type=float, default=0.75,
                   help="--aug resizecrop: the mask's extent as a fraction of the window, in (0, 1]")
    g.add_argument("--img_size", type=int, default=512, help="MindONE's output size: img_size x img_size (see --W/--H)")
    g.add_argument("--W", type=int, default=None,
                   help="output width (default --img_size): a multiple of the VAE factor times the UNet's downsampling "
                        "(64 for SD)")
    g.add_argument("--H", type=int, default=None, help="output height (default --img_size), as --W")
    g.add_argument("--strength", type=float, default=1.0,
                   help="diffusers' strength in (0, 1]: 1 starts from noise; below 1 the run keeps int(steps x "
                        "strength) steps and starts from the image noised to that level")
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", default=None, help="the prompt (MindONE: required; here --data_path may replace it)")
    g.add_argument("--data_path", default="", help="prompt file, one prompt a line (streamed; blank lines skipped)")
    g.add_argument("--negative_prompt", default="",
                   help="negative prompt for classifier-free guidance, every prompt (MindONE: the empty prompt)")
    g.add_argument("--negative_data_path", default="",
                   help="negative prompt file: line i goes with prompt line i, prompts past its end get the blank "
                        "negative (wins over --negative_prompt)")
    g = p.add_argument_group("model")
    g.add_argument("-v", "--version", default="2.0",
                   help="SD version: 2.0 (SD 2.x inpainting) or 1.5 (SD 1.5 inpainting); picks the default --config "
                        "and --ckpt_path")
    g.add_argument("--config", default=None,
                   help="model YAML (default: the model_config.yaml beside a checkpoint of our training, else the "
                        "version's inpainting config); a relative path not found here is looked up in this repo")
    g.add_argument("--ckpt_path", default=None,
                   help="checkpoint: MindSpore/torch .ckpt, .safetensors, diffusers folder (default: the version's "
                        "file name under models/)")
    _bool(g, "--legacy_blend", False,
          "inpaint with a text-to-image (4-channel) model by latent blending: after every step the kept region "
          "is replaced by the image's latents noised to the next step's level (diffusers' 4-channel path); an "
          "inpainting (9-channel) model takes the mask as input instead and refuses this flag")
    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", default=DEFAULT_SAMPLER,
                   help=f"sampler by name (default {DEFAULT_SAMPLER}, MindONE's plms; MindONE's dpm_solver_pp = "
                        "mindone_dpm_solver_pp): " + ", ".join(SAMPLER_NAMES))
    g.add_argument("--sample_steps", "--sampling_steps", dest="sample_steps", type=int, default=50,
                   help="number of sampling steps, 1 .. the model's training timesteps, within the sampler's limits")
    g.add_argument("--guidance_scale", "--scale", dest="guidance_scale", type=float, default=7.5,
                   help="classifier-free guidance scale, finite, in [-1000, 1000] (1 = off)")
    g.add_argument("--guidance_rescale", type=float, default=None,
                   help="guidance rescale phi in [0, 1] (default: 0.7 for a zero-terminal-SNR model, else 0)")
    g.add_argument("--ddim_eta", type=float, default=0.0, help="DDIM eta in [0, 100] (the DDIM samplers only)")
    g.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="timestep spacing (default: trailing for a zero-terminal-SNR model, else the sampler's own)")
    g = p.add_argument_group("randomness and batching")
    g.add_argument("--seed", type=int, default=42, help="image i of the run uses seed + i (0 <= seed + i < 2**63)")
    g.add_argument("--num_samples", type=int, default=4,
                   help="images per prompt, made in ceil(num_samples / batch_size) batches of --batch_size (MindONE's "
                        "count)")
    g.add_argument("--batch_size", type=int, default=4, help="images per batch")
    g = p.add_argument_group("output")
    g.add_argument("--save_path", default=None, help=f"output folder (MindONE's name; default {DEFAULT_OUTPUT})")
    g.add_argument("--output_path", default=None, help="output folder (text_to_image.py's name for --save_path)")
    g.add_argument("--n_rows", type=int, default=0, help="grid images per row (0: --batch_size)")
    g.add_argument("--skip_grid", action="store_true", help="do not write the grid PNG")
    g.add_argument("--skip_save", action="store_true", help="do not write the individual images")
    g.add_argument("--resume", action="store_true",
                   help="skip images already written by the same run (same prompts, seeds, image, mask, strength)")
    g = p.add_argument_group("runtime")
    g.add_argument("--ms_mode", type=int, default=0, choices=(0, 1),
                   help="0 graph, 1 pynative (the UNet call is compiled either way)")
    g.add_argument("--jit_level", default=None, choices=("O0", "O1", "O2"),
                   help="MindONE's graph kernel level (its default O2): accepted, not used (the calls are compiled "
                        "with ms.jit)")
    g.add_argument("--save_graph", action="store_true", help="MindONE's graph dump: accepted, not written here")
    g.add_argument("--device_target", default=None, choices=("CPU", "GPU", "Ascend"),
                   help="MindSpore device (default: MindSpore's own, i.e. the installed backend; MindONE: Ascend)")
    g.add_argument("--log_level", default="logging.INFO",
                   help="logging.DEBUG, logging.INFO, logging.WARNING or logging.ERROR (also DEBUG, info, 10, ...)")
    return p


def resolve_paths(args):
    """(config, checkpoint) from --version / --config / --ckpt_path, checked to exist (text_to_image.py's rules)."""
    if args.version in UNSUPPORTED_VERSIONS:
        raise UserError(f"--version {args.version}: the Chinese Wukong-Huahua inpainting model is not supported; use "
                        f"one of {', '.join(VERSIONS)}")
    if args.version not in VERSIONS:
        raise UserError(f"unknown --version {args.version!r}; choose one of {', '.join(VERSIONS)}")
    config, ckpt = VERSIONS[args.version]
    return model_files(args.config, args.ckpt_path, config, ckpt)


def choose_sampler(name):
    name = SAMPLER_ALIASES.get(name, name)
    if name not in SAMPLER_NAMES:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)} (or dpm_solver_pp)")
    return name


def check_mode(config, legacy_blend):
    """The config's UNet decides how to inpaint; --legacy_blend must agree with it. Returns the mode."""
    from ldm.pipeline_inpaint import BLEND, CONCAT, config_mode
    mode = config_mode(config)
    if mode == BLEND and not legacy_blend:
        raise UserError(f"{config} describes a text-to-image UNet (4 input channels), not an inpainting one: use an "
                        "inpainting config and checkpoint (configs/v2-inpaint-inference.yaml, "
                        "configs/v1-inpaint-inference.yaml), or pass --legacy_blend to inpaint with this model by "
                        "latent blending")
    if mode == CONCAT and legacy_blend:
        raise UserError(f"--legacy_blend is for text-to-image (4-channel) models; {config} describes an inpainting "
                        "UNet, which takes the mask as input: drop --legacy_blend")
    return mode


def settings_from_args(args):
    """(RunSettings, InpaintInputs, output folder, notes) with every check that needs no model done: paths,
    numbers, sampler plan, prompt files, image and mask (read and fitted), the config against --legacy_blend,
    output folder, resume. Notes are (level, message) pairs, logged once the model has loaded."""
    from ldm.diffusion.spec import resolve_spec
    from ldm.inpaint_inputs import prepare, read_image, read_mask
    from ldm.io.prompts import check_prompt_file
    from ldm.pipeline_run import RunSettings, check_run
    from ldm.run_checks import check_input_file, check_number, check_size, check_strength, geometry_from_config
    config, ckpt = resolve_paths(args)
    mode = check_mode(config, args.legacy_blend)
    sampler = choose_sampler(args.sampler)
    output_path = args.output_path or args.save_path or DEFAULT_OUTPUT
    if args.output_path and args.save_path and os.path.abspath(args.output_path) != os.path.abspath(args.save_path):
        raise UserError(f"--output_path {args.output_path} and --save_path {args.save_path} name different folders")
    data_path = args.data_path or None
    if data_path:
        if os.path.exists(data_path):
            check_input_file("--data_path", data_path)
        check_prompt_file(data_path)
    elif args.prompt is None:
        raise UserError("give --prompt (or a prompt file with --data_path)")
    for flag in ("num_samples", "batch_size", "img_size"):
        check_number(f"--{flag}", getattr(args, flag), 1, integer=True)
    check_number("--mask_ratio", args.mask_ratio, 0.0, 1.0, low_open=True)
    width, height = args.W or args.img_size, args.H or args.img_size
    geometry = geometry_from_config(config)
    check_size(width, height, geometry)
    if os.path.isfile(ckpt):
        check_input_file("--ckpt_path", ckpt)
    inputs = prepare(read_image(args.image), read_mask(args.mask), width, height, args.aug, args.mask_ratio)
    extra = dict(image=args.image, mask=args.mask, strength=args.strength, aug=args.aug, inpaint_mode=mode)
    settings = RunSettings(
        prompt=args.prompt, data_path=data_path, negative_prompt=args.negative_prompt,
        negative_data_path=args.negative_data_path or None, width=width, height=height, steps=args.sample_steps,
        sampler=sampler, scale=args.guidance_scale, guidance_rescale=args.guidance_rescale, eta=args.ddim_eta,
        seed=args.seed, n_iter=math.ceil(args.num_samples / args.batch_size), n_samples=args.batch_size,
        sampler_options={"timestep_spacing": args.timestep_spacing} if args.timestep_spacing else {},
        strength=args.strength, checkpoint=ckpt, config=config, n_rows=args.n_rows, record_extra=extra)
    check_run(settings, output_path, resume=args.resume, spec=resolve_spec(config), geometry=geometry)
    check_strength(args.strength, args.sample_steps)
    notes = list(inputs.notes)
    if args.num_samples % args.batch_size:
        notes.append((logging.INFO, f"--num_samples {args.num_samples} in batches of {args.batch_size}: "
                                    f"{settings.n_iter * args.batch_size} images per prompt (MindONE's count)"))
    if args.jit_level:
        notes.append((logging.INFO, "--jit_level is MindONE's graph kernel level; not used here (calls are compiled "
                                    "with ms.jit)"))
    if args.save_graph:
        notes.append((logging.INFO, "--save_graph: no graph dump is written by inpaint.py (scripts/ascend_audit.py "
                                    "dumps and reads the compiled graphs)"))
    return settings, inputs, output_path, notes


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=parse_log_level(args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    settings, inputs, output_path, notes = settings_from_args(args)   # every check that needs no model
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if args.ms_mode == 0 else ms.PYNATIVE_MODE)
    if args.device_target:
        ms.set_device(args.device_target)
    from ldm.pipeline_inpaint import InpaintPipeline
    from ldm.pipeline_run import run_to_folder
    pipe = InpaintPipeline.from_config(settings.config, settings.checkpoint, adopt_recorded_spec=not args.config)
    for level, message in notes:                 # once loading worked: a refusal there is the only line
        logger.log(level, message)

    def started():
        logger.info("SD %s %s, sampler %s, %d steps, scale %s, strength %s, %dx%d, %d x %d per prompt, checkpoint %s",
                    args.version, "inpainting" if pipe.mode == "concat" else "latent blending", settings.sampler,
                    settings.steps, settings.scale, settings.strength, settings.width, settings.height,
                    settings.n_iter, settings.n_samples, settings.checkpoint)
    summary = run_to_folder(pipe, settings, output_path, skip_grid=args.skip_grid, skip_save=args.skip_save,
                            resume=args.resume, log=lambda msg: print(msg, file=sys.stderr), started=started,
                            generate_options=dict(image=inputs.image, mask=inputs.mask))
    for key in ("manifest", "csv", "grid"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
