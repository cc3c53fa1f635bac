"""ControlNet text -> image with Stable Diffusion 1.x / 2.x: a drop-in for MindONE's controlnet_image2image.py.

    python controlnet_image2image.py --model_config configs/v1-controlnet-inference.yaml \\
        --model_ckpt models/control_canny_sd_v1.5_static-6350d204.ckpt --input_image dog.png --prompt "cute dog"
    python controlnet_image2image.py -v 1.5 --ckpt_path models/sd_v1.5-d0ab7146.ckpt \\
        --controlnet models/control_v11p_sd15_canny.pth --input_image bird.png --prompt "a bird" --sampler dpm_solver
    python controlnet_image2image.py -v 2.1 --controlnet sd21-canny/ --control_image edges.png --W 768 --H 512

Every flag of MindONE's script is accepted with its meaning and default (canny edges of --input_image with
thresholds 100/200, the shorter side scaled to --image_resolution 512, 20 DDIM steps, scale 9, --strength 1 = the
ControlNet's conditioning scale, --a_prompt "best quality" appended, its long negative prompt, 4 samples);
ours add diffusers' controls (--controlnet_conditioning_scale, --guess_mode, --control_guidance_start/_end,
several --controlnet), ready control maps (--control_image), any sampler and the ControlNet file formats of
diffusers, lllyasviel and MindONE. Images go to {output_path}/{task_name}/samples/00000.png ..., with
manifest.jsonl / manifest.csv, a grid PNG and the control maps as used (control-0.png, ...).
"""
import argparse
import logging
import os
import sys

from ldm.cli_args import OneLineParser, model_files
from ldm.errors import UserError, run_cli
from text_to_image import _bool, _bytes_on_disk, parse_log_level

logger = logging.getLogger("controlnet_image2image")
REPO = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {  # --version -> (default config, default checkpoint)
    "1.5": ("configs/v1-controlnet-inference.yaml", "models/control_canny_sd_v1.5_static-6350d204.ckpt"),
    "2.0": ("configs/v2-controlnet-inference.yaml", "models/sd_v2_base-57526ee4.ckpt"),
    "2.1": ("configs/v2-controlnet-inference.yaml", "models/sd_v2-1_base-7c8d09ce.ckpt"),
    "2.0-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2_768_v-e12e3a9b.ckpt"),
    "2.1-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2-1_768_v-061732d1.ckpt"),
}
MODES = ("canny", "segmentation")                  # MindONE's --mode
DEFAULT_SAMPLER = "mindone_ddim"                   # MindONE's DDIMSampler (cldm/ddim_hacked.py)
MINDONE_N_PROMPT = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
                    "worst quality, low quality")


def build_parser():
    from ldm.diffusion.samplers import SAMPLER_NAMES
    from ldm.models.attention_ops import MODES as ATTENTION_MODES
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", default="", help="the prompt (MindONE: None, i.e. empty); --a_prompt is appended")
    g.add_argument("--a_prompt", default="best quality",
                   help="added prompt: the prompt becomes 'PROMPT, A_PROMPT' (empty: nothing added; not added to the "
                        "lines of --data_path)")
    g.add_argument("--n_prompt", "--negative_prompt", dest="n_prompt", default=MINDONE_N_PROMPT,
                   help="negative prompt of every image (MindONE's default)")
    g.add_argument("--data_path", default="", help="prompt file, one prompt a line (blank lines skipped), used "
                   "instead of --prompt; each line is used as it is")
    g = p.add_argument_group("model")
    g.add_argument("-v", "--version", default="1.5", help="SD version: " + ", ".join(VERSIONS) +
                   "; picks the default --config and --ckpt_path")
    g.add_argument("--config", "--model_config", dest="config", default=None,
                   help="model YAML (MindONE's --model_config; a cldm YAML or ours, with or without "
                        "control_stage_config) (default: the version's configs/*controlnet*.yaml)")
    g.add_argument("--ckpt_path", "--model_ckpt", dest="ckpt_path", default=None,
                   help="base checkpoint, any format of text_to_image.py (MindONE's --model_ckpt); a file holding "
                        "base + ControlNet (MindONE's control_*_sd_v1.5*.ckpt, lllyasviel's control_sd15_*.pth) is "
                        "also the ControlNet when --controlnet is not given")
    g.add_argument("--controlnet", action="append", default=None, metavar="PATH",
                   help="a ControlNet: diffusers ControlNetModel folder, lllyasviel .pth/.safetensors, MindONE "
                        "cldm .ckpt or ours; repeat for several (their residuals are summed)")
    g = p.add_argument_group("control images")
    g.add_argument("--control_image", action="append", default=None, metavar="PATH",
                   help="a ready control map (edges, depth, pose ...), one for every --controlnet or one for all; "
                        "used as it is unless --detector says otherwise")
    g.add_argument("--input_image", default=None,
                   help="MindONE's input: a photo that --mode's detector turns into the control map (the same as "
                        "--control_image PATH --detector MODE)")
    g.add_argument("--mode", default="canny", choices=MODES,
                   help="MindONE's detector for --input_image: canny; segmentation (DeepLabV3+) is not supported: "
                        "pass a segmentation map as --control_image")
    g.add_argument("--detector", default=None, choices=("none", "canny"),
                   help="what turns the control image into the control map (default: none for --control_image, "
                        "--mode for --input_image)")
    g.add_argument("--canny_low", "--low_threshold", dest="canny_low", type=float, default=100.0,
                   help="canny: lower hysteresis threshold on the 3x3 Sobel gradient |gx| + |gy| (OpenCV's rule)")
    g.add_argument("--canny_high", "--high_threshold", dest="canny_high", type=float, default=200.0,
                   help="canny: upper threshold (edges start where the gradient exceeds it)")
    g.add_argument("--canny_sigma", type=float, default=0.0,
                   help="canny: Gaussian blur sigma in pixels before the gradient (0: none, as cv2.Canny)")
    g.add_argument("--condition_ckpt_path", default="",
                   help="MindONE's weights of the segmentation detector (unused: --mode segmentation is refused)")
    g = p.add_argument_group("control strength")
    g.add_argument("--controlnet_conditioning_scale", type=float, nargs="+", default=None, metavar="S",
                   help="weight of the ControlNet residuals, one for all or one per --controlnet (default 1)")
    g.add_argument("--strength", type=float, default=None,
                   help="MindONE's name of the conditioning scale (one value for every ControlNet; default 1)")
    _bool(g, "--guess_mode", False, "guess mode: the ControlNet on the conditional half only, residuals ramped "
          "0.1 -> 1 from the first skip to the middle block (diffusers); MindONE's --guess_mode")
    g.add_argument("--control_guidance_start", type=float, nargs="+", default=[0.0], metavar="F",
                   help="fraction of the steps after which each ControlNet starts acting (one or one per ControlNet)")
    g.add_argument("--control_guidance_end", type=float, nargs="+", default=[1.0], metavar="F",
                   help="fraction of the steps after which each ControlNet stops (above the start)")
    g = p.add_argument_group("sampling")
    g.add_argument("--W", type=int, default=None, help="image width (default: from the control image, shorter side "
                   "--image_resolution, MindONE's rule); a control image of the same aspect ratio is resized to it, "
                   "of another one refused")
    g.add_argument("--H", type=int, default=None, help="image height (give --W and --H together)")
    g.add_argument("--image_resolution", type=int, default=512,
                   help="without --W/--H: the shorter side of the output, both sides rounded to the model's size "
                        "multiple (64 for SD)")
    g.add_argument("--sampling_steps", type=int, default=20,
                   help="sampling steps, 1 .. 1000 within the sampler's limits")
    g.add_argument("--scale", type=float, default=9.0, help="classifier-free guidance scale in [-1000, 1000] (1 = off)")
    g.add_argument("--guidance_rescale", type=float, default=None,
                   help="guidance rescale phi in [0, 1] (default: 0.7 for a zero-terminal-SNR model, else 0)")
    g.add_argument("--ddim_eta", type=float, default=0.0, help="DDIM eta in [0, 100] (0 deterministic)")
    g.add_argument("--sampler", default=DEFAULT_SAMPLER,
                   help="sampler (MindONE: its DDIM = mindone_ddim): " + ", ".join(SAMPLER_NAMES))
    g.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="timestep spacing (default: the sampler's own, trailing for a zero-terminal-SNR model)")
    g.add_argument("--seed", type=int, default=42, help="image i of the run uses seed + i")
    g = p.add_argument_group("batching and output")
    g.add_argument("--n_samples", type=int, default=4, help="images per prompt per batch (MindONE: 1 .. 12)")
    g.add_argument("--n_iter", type=int, default=1, help="batches per prompt")
    g.add_argument("--n_rows", type=int, default=0, help="grid images per row (0: n_samples)")
    g.add_argument("--output_path", default="output/", help="output folder")
    g.add_argument("--task_name", default="canny2image",
                   help="sub-folder of --output_path for this run (MindONE's; '' = --output_path itself)")
    g.add_argument("--skip_grid", action="store_true", help="do not write the grid PNG")
    g.add_argument("--skip_save", action="store_true", help="do not write the individual images")
    g.add_argument("--resume", action="store_true", help="skip images already written by the same run")
    g = p.add_argument_group("runtime")
    g.add_argument("--attention", default=None, choices=ATTENTION_MODES,
                   help="attention of the UNet, ControlNets and VAE (see text_to_image.py; default: the config's, "
                        "else auto)")
    g.add_argument("--ms_mode", type=int, default=0, choices=(0, 1),
                   help="0 graph, 1 pynative (the UNet + ControlNet call is compiled either way)")
    g.add_argument("--device_target", default=None, choices=("CPU", "GPU", "Ascend"),
                   help="MindSpore device (default: the installed backend; MindONE: Ascend)")
    g.add_argument("--log_level", default="logging.INFO", help="logging.DEBUG, logging.INFO, logging.WARNING, ...")
    return p


def resolve_paths(args):
    """(config, checkpoint) from --version / --config / --ckpt_path, checked to exist."""
    if args.version not in VERSIONS:
        raise UserError(f"unknown --version {args.version!r}; choose one of {', '.join(VERSIONS)}")
    config, ckpt = VERSIONS[args.version]
    return model_files(args.config, args.ckpt_path, config, ckpt, config_beside=False)


def control_sources(args):
    """[(flag, path, detector)] of the control images, in --controlnet order (--input_image last)."""
    if args.mode == "segmentation":
        raise UserError("--mode segmentation: MindONE's DeepLabV3+ detector is not supported; pass a segmentation map "
                        "as --control_image (--detector none)")
    sources = [("--control_image", path, args.detector or "none") for path in args.control_image or []]
    if args.input_image:
        sources.append(("--input_image", args.input_image, args.detector or args.mode))
    if not sources:
        raise UserError("no control image: give --control_image (a control map) or --input_image (a photo for the "
                        "canny detector)")
    return sources


def per_controlnet(values, k, flag):
    if len(values) not in (1, k):
        raise UserError(f"{len(values)} values of {flag} for {k} ControlNet(s): give one, or one per --controlnet")
    return list(values) if len(values) == k else list(values) * k


def control_numbers(args, k):
    """(scales, starts, ends) per ControlNet; --strength (MindONE) and --controlnet_conditioning_scale agree."""
    from ldm.pipeline_controlnet import check_control_numbers
    scales = args.controlnet_conditioning_scale
    if args.strength is not None:
        if scales is not None and any(s != args.strength for s in scales):
            raise UserError(f"--strength {args.strength} and --controlnet_conditioning_scale {scales} disagree: give "
                            "one of them")
        scales = scales or [args.strength]
    scales = per_controlnet(scales or [1.0], k, "--controlnet_conditioning_scale")
    starts = per_controlnet(args.control_guidance_start, k, "--control_guidance_start")
    ends = per_controlnet(args.control_guidance_end, k, "--control_guidance_end")
    check_control_numbers(scales, starts, ends)
    return scales, starts, ends


def control_maps(sources, k, args, geometry, notes):
    """The control maps (uint8 (H, W, 3), one per ControlNet) at the output size, and that size."""
    from ldm.control_inputs import detect, fit_to_size, read_control_image, size_from_image
    from ldm.run_checks import check_number
    if len(sources) not in (1, k):
        raise UserError(f"{len(sources)} control images for {k} ControlNet(s): give one for all, or one per "
                        "--controlnet")
    for flag, value in (("--canny_low", args.canny_low), ("--canny_high", args.canny_high)):
        check_number(flag, value, 0.0)
    if args.canny_low > args.canny_high:
        raise UserError(f"--canny_low {args.canny_low:g} is above --canny_high {args.canny_high:g}")
    check_number("--canny_sigma", args.canny_sigma, 0.0, 100.0)
    images = [read_control_image(path, flag) for flag, path, _ in sources]
    if (args.W is None) != (args.H is None):
        raise UserError("give --W and --H together (or neither: the size then follows the control image)")
    if args.W is None:
        check_number("--image_resolution", args.image_resolution, 1, 16384, integer=True)
        width, height = size_from_image(images[0], args.image_resolution, geometry.size_multiple)
        notes.append((logging.INFO, "output size %dx%d from control image %s (shorter side %d)", width, height,
                      sources[0][1], args.image_resolution))
    else:
        width, height = args.W, args.H
    maps = []
    for (_, path, detector), image in zip(sources, images):
        image, note = fit_to_size(image, width, height, f"control image {path}")
        if note and args.W is not None:
            notes.append((logging.INFO, note))
        maps.append(detect(image, detector, args.canny_low, args.canny_high, args.canny_sigma))
    return maps * (k if len(maps) == 1 else 1), width, height


def settings_from_args(args):
    """RunSettings plus the control inputs (left on ``args``) with every check that needs no model done: one
    stderr line for a bad input, before any log line, model or folder."""
    from ldm.diffusion.samplers import SAMPLER_NAMES
    from ldm.diffusion.spec import resolve_spec
    from ldm.io.prompts import check_prompt_file
    from ldm.memory_estimate import config_param_count
    from ldm.memory_estimate import plan as plan_memory
    from ldm.models.attention_ops import settings_from_config
    from ldm.pipeline_run import RunSettings, check_run
    from ldm.run_checks import check_input_file, geometry_from_config
    notes = []
    config, ckpt = resolve_paths(args)
    if args.sampler not in SAMPLER_NAMES:
        raise UserError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    controlnets = args.controlnet or []
    for path in controlnets:
        if not os.path.exists(path):
            raise UserError(f"ControlNet not found: {path}")
        if os.path.isfile(path):
            check_input_file("--controlnet", path)
    if os.path.isfile(ckpt):
        check_input_file("--ckpt_path", ckpt)
    k = max(1, len(controlnets))
    if args.condition_ckpt_path:
        notes.append((logging.INFO, "--condition_ckpt_path is only used by the segmentation detector, which is off"))
    sources = control_sources(args)
    scales, starts, ends = control_numbers(args, k)
    geometry = geometry_from_config(config)
    maps, width, height = control_maps(sources, k, args, geometry, notes)
    if args.data_path:
        if os.path.exists(args.data_path):
            check_input_file("--data_path", args.data_path)
        check_prompt_file(args.data_path)
    prompt = f"{args.prompt}, {args.a_prompt}" if args.a_prompt else args.prompt
    options = {"timestep_spacing": args.timestep_spacing} if args.timestep_spacing else {}
    record = dict(controlnets=controlnets or [ckpt], control_images=[p for _, p, _ in sources],
                  detectors=[d for _, _, d in sources], controlnet_conditioning_scale=scales,
                  guess_mode=bool(args.guess_mode), control_guidance_start=starts, control_guidance_end=ends)
    if any(d == "canny" for _, _, d in sources):
        record.update(canny_low=args.canny_low, canny_high=args.canny_high, canny_sigma=args.canny_sigma)
    settings = RunSettings(prompt=prompt, data_path=args.data_path or None, negative_prompt=args.n_prompt,
                           width=width, height=height, steps=args.sampling_steps, sampler=args.sampler,
                           scale=args.scale, guidance_rescale=args.guidance_rescale, eta=args.ddim_eta, seed=args.seed,
                           n_iter=args.n_iter, n_samples=args.n_samples, n_rows=args.n_rows, sampler_options=options,
                           checkpoint=ckpt, config=config, record_extra=record)
    output = os.path.join(args.output_path, args.task_name) if args.task_name else args.output_path
    check_run(settings, output, resume=args.resume, spec=resolve_spec(config), geometry=geometry)
    attention = settings_from_config(config, args.attention)
    args.memory_plan = None
    if args.device_target in (None, "CPU"):
        weights = _bytes_on_disk(ckpt) + sum(_bytes_on_disk(p) for p in controlnets)
        args.memory_plan = plan_memory(geometry, width, height, args.n_samples, args.scale != 1.0, weights,
                                       config_param_count(config), attention)
    args.output, args.config_path, args.attention_settings = output, config, attention
    args.control = dict(control_image=maps[0] if k == 1 else maps, controlnet_conditioning_scale=scales,
                        guess_mode=bool(args.guess_mode), control_guidance_start=starts, control_guidance_end=ends)
    args.control_maps, args.startup_notes = maps, notes
    return settings


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=parse_log_level(args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)          # every check that needs no model, before any log line
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if args.ms_mode == 0 else ms.PYNATIVE_MODE)
    if args.device_target:
        ms.set_device(args.device_target)
    from ldm.io.images import save_png_atomic
    from ldm.pipeline_controlnet import ControlNetPipeline
    from ldm.pipeline_run import run_to_folder
    pipe = ControlNetPipeline.from_config(settings.config, settings.checkpoint, controlnets=args.controlnet,
                                          adopt_recorded_spec=not args.config, attention=args.attention_settings)
    if args.memory_plan is not None and args.memory_plan.sliced:
        pipe.set_micro_batches(args.memory_plan.unet_batch, args.memory_plan.vae_batch)
    for level, *message in args.startup_notes:
        logger.log(level, *message)

    def started():
        model = f"SD {args.version}" if not args.config else settings.config
        logger.info("%s with %d ControlNet(s), sampler %s, %d steps, scale %s, %dx%d, %d x %d per prompt, "
                    "conditioning scale %s%s", model, len(pipe.controlnets), settings.sampler, settings.steps,
                    settings.scale, settings.width, settings.height, settings.n_iter, settings.n_samples,
                    args.control["controlnet_conditioning_scale"], ", guess mode" if args.guess_mode else "")
    summary = run_to_folder(pipe, settings, args.output, skip_grid=args.skip_grid, skip_save=args.skip_save,
                            resume=args.resume, log=lambda msg: print(msg, file=sys.stderr), started=started,
                            generate_options=args.control)
    if not args.skip_save:
        for k, image in enumerate(args.control_maps):
            save_png_atomic(image, os.path.join(args.output, f"control-{k}.png"))
    for key in ("manifest", "csv", "grid"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
