"""Text -> image with Stable Diffusion 1.x / 2.x (eps or v): a drop-in for MindONE's text_to_image.py.

    python text_to_image.py -v 2.1-v --ckpt_path models/sd_v2-1_768_v-061732d1.ckpt --W 768 --H 768 \\
        --prompt "a red bicycle" --negative_prompt "blurry" --dpm_solver --sampling_steps 15 --scale 9
    python text_to_image.py --data_path prompts.txt --negative_data_path negatives.txt --output_path out/ --resume

Every flag of MindONE's examples/stable_diffusion_v2/text_to_image.py is accepted with its meaning and
default (20 steps of DPM-Solver++, n_iter 2 x n_samples 4 per prompt, version 2.1, scale 9 for 2.x /
7.5 for 1.x, graph mode); the ones MindONE has and we do not implement (textual inversion, watermark,
safety checker, the Chinese 1.5-wukong model) fail in one line when asked for. Images go to
{output_path}/samples/00000.png ..., with manifest.jsonl / manifest.csv (prompt, seed, sampler, steps,
scale, size, checkpoint per image) and a grid PNG unless --skip_grid.
"""
import argparse
import logging
import os
import sys

from ldm.cli_args import OneLineParser, model_files
from ldm.diffusion.samplers import SAMPLER_NAMES as SAMPLERS
from ldm.errors import UserError, run_cli
from ldm.models.attention_ops import MODES as ATTENTION_MODES

logger = logging.getLogger("text_to_image")
REPO = os.path.dirname(os.path.abspath(__file__))
VERSIONS = {  # --version -> (default config, default checkpoint (MindONE's file names), the model's size)
    "1.5": ("configs/v1-inference.yaml", "models/sd_v1.5-d0ab7146.ckpt", 512),
    "2.0": ("configs/v2-inference.yaml", "models/sd_v2_base-57526ee4.ckpt", 512),
    "2.0-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2_768_v-e12e3a9b.ckpt", 768),
    "2.1": ("configs/v2-inference.yaml", "models/sd_v2-1_base-7c8d09ce.ckpt", 512),
    "2.1-v": ("configs/v2-vpred-inference.yaml", "models/sd_v2-1_768_v-061732d1.ckpt", 768),
}
UNSUPPORTED_VERSIONS = {"1.5-wukong": "the Chinese Wukong-Huahua model (its Chinese tokenizer and text encoder "
                                      "are not implemented here)"}
# MindONE's sampler switches in MindONE's precedence (an if/elif chain: --ddim wins over --dpm_solver,
# then --plms, then --uni_pc) -> our ports of MindONE's samplers; no switch = MindONE's DPM-Solver++.
SAMPLER_SWITCHES = (("ddim", "mindone_ddim"), ("dpm_solver", "mindone_dpm_solver"), ("plms", "mindone_plms"),
                    ("uni_pc", "mindone_uni_pc"))
DEFAULT_SAMPLER = "mindone_dpm_solver_pp"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def _bool(g, flag, default, text):
    """A MindONE boolean: ``--flag True|False``; a bare ``--flag`` means True."""
    g.add_argument(flag, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=text)


def build_parser():
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("prompts")
    g.add_argument("--prompt", default="A cute wolf in winter forest", help="the prompt (ignored with --data_path)")
    g.add_argument("--data_path", default="", help="prompt file, one prompt a line (streamed; blank lines skipped)")
    g.add_argument("--from-file", dest="from_file", default=None, metavar="PATH",
                   help="the same as --data_path (MindONE's alias; MindONE itself parses it and ignores it)")
    g.add_argument("--negative_prompt", default="", help="negative prompt for classifier-free guidance, every prompt")
    g.add_argument("--negative_data_path", default="",
                   help="negative prompt file: line i goes with prompt line i, prompts past its end get the blank "
                        "negative; it may not have more lines than the prompt file (wins over --negative_prompt)")
    _bool(g, "--support_long_prompts", False, "encode prompts beyond 77 tokens in 75-token chunks (MindONE's rule) "
          "instead of cutting them")
    g.add_argument("--pack_prompts", action="store_true",
                   help="with --data_path: fill each batch of --n_samples with different prompts, one image per "
                        "prompt per --n_iter (default, as MindONE: n_samples copies of each prompt)")
    g = p.add_argument_group("model")
    g.add_argument("-v", "--version", default="2.1",
                   help="SD version: 2.1, 2.1-v, 2.0, 2.0-v, 1.5; picks the default --config, --ckpt_path, --scale")
    g.add_argument("--config", default=None,
                   help="model YAML (default: the model_config.yaml saved beside a checkpoint from our training, "
                        "else the one of --version); a relative path not found here is looked up in this repo; "
                        "it must agree with the diffusion spec such a checkpoint records")
    g.add_argument("--ckpt_path", default=None, help="checkpoint: MindSpore/torch .ckpt, .safetensors "
                   "(default: MindONE's file name for --version under models/)")
    _bool(g, "--use_lora", None, "apply --lora_ckpt_path (MindONE's default False; here default: on when "
          "--lora_ckpt_path is given; True without a LoRA file = the checkpoint already holds the LoRA weights)")
    g.add_argument("--lora_ckpt_path", default=None, help="LoRA-only checkpoint to apply")
    g.add_argument("--lora_scale", type=float, default=1.0, help="LoRA strength, finite, in [-1000, 1000] (0 = no effect)")
    g.add_argument("--lora_rank", type=int, default=None,
                   help="LoRA rank (default: read from the LoRA file; a value that disagrees with it is ignored)")
    _bool(g, "--lora_ft_unet", True, "load the LoRA file's UNet adapters")
    _bool(g, "--lora_ft_text_encoder", False, "load the LoRA file's text-encoder adapters")
    g.add_argument("--ti_ckpt_path", default=None, help="textual inversion embedding (MindONE _ti.ckpt, diffusers "
                   "learned_embeds .safetensors/.bin, A1111 .pt); its placeholder in prompts becomes all its vectors")
    g = p.add_argument_group("sampling")
    g.add_argument("--W", type=int, default=512, help="image width: a multiple of the VAE factor times the UNet's "
                   "downsampling (64 for SD, 8 for the tiny demo model; MindONE: 512 for every version); sizes "
                   "whose memory estimate exceeds the free memory are refused")
    g.add_argument("--H", type=int, default=512, help="image height, as --W (use 768 for the -v models)")
    g.add_argument("--sampling_steps", type=int, default=20,
                   help="number of sampling steps, 1 .. the model's training timesteps (1000), within the sampler's "
                        "own limits")
    g.add_argument("--scale", type=float, default=None,
                   help="classifier-free guidance scale, any finite value in [-1000, 1000]: 1 = off, 0 = "
                        "unconditional, below 1 applied as is (diffusers switches guidance off below 1) "
                        "(default: 9 for 2.x, 7.5 for 1.x)")
    g.add_argument("--guidance_rescale", type=float, default=None,
                   help="guidance rescale phi in [0, 1] (default: 0.7 for a zero-terminal-SNR model, else 0)")
    g.add_argument("--ddim_eta", type=float, default=0.0,
                   help="DDIM eta in [0, 100] (0 deterministic, 1 DDPM-like; only the DDIM samplers use it)")
    for flag, name in SAMPLER_SWITCHES:
        g.add_argument(f"--{flag}", action="store_true", help=f"MindONE's {flag} sampler ({name})")
    g.add_argument("--sampler", default=None, help="sampler by name (wins over the switches; default "
                   f"{DEFAULT_SAMPLER}, MindONE's DPM-Solver++): " + ", ".join(SAMPLERS))
    g.add_argument("--timestep_spacing", default=None, choices=("leading", "trailing", "linspace"),
                   help="timestep spacing (default: trailing for a zero-terminal-SNR model, else the sampler's own)")
    g.add_argument("--rescale_zero_snr", type=str2bool, nargs="?", const=True, default=None,
                   help="override the model's zero-terminal-SNR setting (default: what the config or the "
                        "checkpoint's recorded spec says)")
    g = p.add_argument_group("randomness")
    g.add_argument("--seed", type=int, default=42, help="image i of the run uses seed + i (0 <= seed + i < 2**63)")
    g.add_argument("--fixed_code", action="store_true", help="the same start noise for every batch")
    g.add_argument("--init_latents", default=None, help=".npy unit-variance start noise (n_samples, 4, H/8, W/8)")
    g = p.add_argument_group("batching and output")
    g.add_argument("--n_iter", type=int, default=2, help="how many batches per prompt (trials)")
    g.add_argument("--n_samples", type=int, default=4, help="batch size: images of each prompt per trial")
    g.add_argument("--n_rows", type=int, default=0, help="grid images per row (0: n_samples)")
    g.add_argument("--output_path", default="output", help="output folder")
    g.add_argument("--skip_grid", action="store_true", help="do not write the grid PNG")
    g.add_argument("--skip_save", action="store_true", help="do not write the individual images")
    g.add_argument("--save_intermediates", type=int, default=0, metavar="K",
                   help="also save every K-th step's predicted x0 as images (0 = off)")
    g.add_argument("--resume", action="store_true", help="skip images already written by the same run")
    g = p.add_argument_group("img2img")
    g.add_argument("--init_image", default=None, help="start from this image (img2img)")
    g.add_argument("--strength", type=float, default=0.8,
                   help="img2img: how much of the schedule to run, in (0, 1] (strength x steps >= 1)")
    g = p.add_argument_group("watermark and safety checker (MindONE's; not supported: asking for them is an error)")
    _bool(g, "--add_watermark", False, "add an invisible watermark (not supported)")
    _bool(g, "--check_safety", False, "run the safety checker (not supported)")
    g.add_argument("--clip_ckpt_path", default=None, help="CLIP ViT-L/14 weights of the safety checker (unused)")
    g.add_argument("--safety_version", type=int, default=2, choices=(1, 2),
                   help="SD version whose safety checker to use (unused)")
    g = p.add_argument_group("attention and memory")
    g.add_argument("--attention", default=None, choices=ATTENTION_MODES,
                   help="how the UNet and VAE compute attention: standard (all scores at once), chunked (exact, "
                        "query rows in chunks: far less memory at 768 px), flash (Ascend's FlashAttentionScore; "
                        "elsewhere one notice line and chunked), auto (flash on Ascend, else chunked when a call's "
                        "fp32 scores pass 512 MiB, else standard) (default: the config's attention key, else auto)")
    g.add_argument("--attention_chunk", type=int, default=None, metavar="ROWS",
                   help="query rows per chunk of chunked attention, a positive whole number (default: as many as "
                        "keep one chunk's fp32 scores within 512 MiB)")
    _bool(g, "--enable_flash_attention", None, "MindONE's switch: True = --attention flash (unless --attention or "
          "the config's attention key says otherwise); default: the config's enable_flash_attention key")
    g = p.add_argument_group("runtime")
    g.add_argument("--ms_mode", type=int, default=0, choices=(0, 1),
                   help="0 graph, 1 pynative (the UNet call is compiled either way)")
    g.add_argument("--device_target", default=None, choices=("CPU", "GPU", "Ascend"),
                   help="MindSpore device (default: MindSpore's own, i.e. the installed backend; MindONE: Ascend)")
    g.add_argument("--compile_cache", default=os.environ.get("MSD_COMPILE_CACHE", "off"),
                   help="folder where MindSpore keeps this run's compiled graphs, so that an identical later run "
                        "skips compilation (a sub-folder per distinct run; default $MSD_COMPILE_CACHE, else off)")
    g.add_argument("--log_level", default="logging.INFO",
                   help="logging.DEBUG, logging.INFO, logging.WARNING or logging.ERROR (also DEBUG, info, 10, ...)")
    return p


def parse_log_level(value):
    """MindONE writes ``logging.INFO``; accept that, the bare name in any case, or the number."""
    text = str(value).strip()
    name = text[len("logging."):] if text.startswith("logging.") else text
    if name.isdigit():
        return int(name)
    if name.upper() in LOG_LEVELS:
        return getattr(logging, name.upper())
    raise UserError(f"--log_level {value!r}: use one of {', '.join('logging.' + n for n in LOG_LEVELS[:4])}")


def check_unsupported(args):
    """MindONE features we do not have: one line each, before anything is loaded. Returns the notes to
    log once every check has passed."""
    if args.ti_ckpt_path:                      # read (so checked) now; loaded into the model in main
        from ldm.models.textual_inversion import read_embedding_file
        read_embedding_file(args.ti_ckpt_path)
    if args.add_watermark:
        raise UserError("--add_watermark: the invisible watermark is not supported; leave it off")
    if args.check_safety:
        raise UserError("--check_safety: the safety checker is not supported; leave it off")
    if args.clip_ckpt_path:
        return [(logging.INFO, "--clip_ckpt_path is only used by the safety checker, which is off")]
    return []


def check_version(version):
    if version in UNSUPPORTED_VERSIONS:
        raise UserError(f"--version {version}: {UNSUPPORTED_VERSIONS[version]} is not supported; "
                        f"use one of {', '.join(VERSIONS)}")
    if version not in VERSIONS:
        raise UserError(f"unknown --version {version!r}; choose one of {', '.join(VERSIONS)}")


def choose_sampler(args):
    """--sampler NAME, else MindONE's switches in MindONE's precedence, else MindONE's DPM-Solver++."""
    name = args.sampler
    if not name:
        name = next((n for flag, n in SAMPLER_SWITCHES if getattr(args, flag)), DEFAULT_SAMPLER)
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return name


def resolve_paths(args):
    """(config, checkpoint, the version's size) from --version / --config / --ckpt_path, checked to
    exist (ldm.cli_args.model_files: a model_config.yaml our training saved beside the checkpoint is the
    config when --config is not given)."""
    config, ckpt, size = VERSIONS[args.version]
    return model_files(args.config, args.ckpt_path, config, ckpt) + (size,)


def _bytes_on_disk(path):
    """A weight file's size (a diffusers folder: its files'), the weights' share of the memory estimate."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names
               if os.path.isfile(os.path.join(d, f)))


def settings_from_args(args):
    """RunSettings from the parsed flags with every check that needs no model done (ldm.pipeline_run.
    check_run: numbers, sizes, memory, sampler plan, files, output folder, resume); warnings are logged
    only once all checks passed, so a bad input is exactly one stderr line. The LoRA choice (file and
    adapter prefixes) is left on ``args.lora_choice`` for building the pipeline."""
    from ldm.diffusion.spec import resolve_spec
    from ldm.io.prompts import check_prompt_file
    from ldm.lora_options import resolve_lora
    from ldm.memory_estimate import config_param_count
    from ldm.memory_estimate import plan as plan_memory
    from ldm.models.attention_ops import describe, settings_from_config
    from ldm.pipeline_run import RunSettings, check_run
    from ldm.run_checks import SCALE_LIMIT, check_input_file, check_number, geometry_from_config
    notes = check_unsupported(args)            # (level, message, args...): logged after every check
    check_version(args.version)
    sampler = choose_sampler(args)
    config, ckpt, size = resolve_paths(args)
    if not args.ckpt_path and (args.W, args.H) != (size, size):
        notes.append((logging.WARNING, "the SD %s model is made for %dx%d, got W=%d H=%d", args.version, size, size,
                      args.W, args.H))
    data_path = args.data_path or None
    if args.from_file:
        if data_path and os.path.abspath(data_path) != os.path.abspath(args.from_file):
            raise UserError(f"--from-file {args.from_file} and --data_path {data_path} name different prompt files")
        data_path = args.from_file
    if data_path:
        if os.path.exists(data_path):
            check_input_file("--data_path", data_path)      # a folder, an unreadable file
        check_prompt_file(data_path)
    scale = args.scale if args.scale is not None else (9.0 if args.version.startswith("2.") else 7.5)
    check_number("--lora_scale", args.lora_scale, -SCALE_LIMIT, SCALE_LIMIT)
    if args.lora_rank is not None:
        check_number("--lora_rank", args.lora_rank, 1, integer=True)
    if os.path.isfile(ckpt):
        check_input_file("--ckpt_path", ckpt)
    options = {"timestep_spacing": args.timestep_spacing} if args.timestep_spacing else {}
    settings = RunSettings(prompt=args.prompt, data_path=data_path, negative_prompt=args.negative_prompt,
                           negative_data_path=args.negative_data_path or None, pack_prompts=args.pack_prompts,
                           long_prompts=args.support_long_prompts, n_rows=args.n_rows,
                           width=args.W, height=args.H, steps=args.sampling_steps, sampler=sampler,
                           scale=scale, guidance_rescale=args.guidance_rescale, eta=args.ddim_eta,
                           seed=args.seed, n_iter=args.n_iter, n_samples=args.n_samples, fixed_code=args.fixed_code,
                           sampler_options=options, init_latents=args.init_latents, init_image=args.init_image,
                           strength=args.strength, save_intermediates=args.save_intermediates, checkpoint=ckpt,
                           config=config, lora=args.lora_ckpt_path)
    spec = resolve_spec(config, rescale_zero_snr=args.rescale_zero_snr)
    if args.attention_chunk is not None:
        check_number("--attention_chunk", args.attention_chunk, 1, integer=True)
    attention = settings_from_config(config, args.attention, args.attention_chunk, args.enable_flash_attention)
    if attention.mode != "auto":
        label = "enable_flash_attention" if args.enable_flash_attention and args.attention is None else None
        notes.append((logging.INFO, describe(attention, args.device_target, label)))
    weights = _bytes_on_disk(ckpt) + (_bytes_on_disk(args.lora_ckpt_path) if args.lora_ckpt_path else 0)
    geometry = geometry_from_config(config)
    check_run(settings, args.output_path, resume=args.resume, spec=spec, geometry=geometry)
    args.attention_settings, args.memory_plan = attention, None
    if args.device_target in (None, "CPU"):           # host memory; a device's own memory is not known here
        args.memory_plan = memory = plan_memory(geometry, args.W, args.H, args.n_samples, scale != 1.0, weights,
                                                config_param_count(config), attention)
        if memory.sliced:
            notes.append((logging.INFO, "memory: the whole batch would need about %.1f GiB; the UNet runs on %s and "
                          "the VAE decodes %s image(s) at a time (estimated peak %.1f GiB)",
                          memory.whole.total / 2 ** 30, memory.unet_batch or args.n_samples,
                          memory.vae_batch or args.n_samples, memory.estimate.total / 2 ** 30))
    from ldm.pipeline_inpaint import CONCAT, config_mode
    args.inpainting_model = config_mode(config) == CONCAT    # drawn as inpainting with everything repainted
    if args.inpainting_model and args.init_image:
        raise UserError(f"{config} describes an inpainting model (its UNet takes a mask): for img2img with it use "
                        "inpaint.py (--image, --mask, --strength)")
    choice = resolve_lora(args.lora_ckpt_path, args.use_lora, args.lora_rank, args.lora_ft_unet,
                          args.lora_ft_text_encoder)       # the last check: it logs only after its checks
    args.lora_choice = choice
    settings.lora = choice.path
    args.startup_notes = notes      # logged once the model, LoRA and embedding have loaded: a refusal there
    return settings                 # (e.g. an SD 1.x LoRA on an SD 2.x model) must be the only line


def _graph_key(args, settings):
    """What decides this run's compiled graphs, and the order they compile in (see ldm.compile_cache):
    every setting but the output folder, and the content stamps of the files it reads (model config,
    checkpoint, LoRA, prompt files, init image/latents)."""
    from ldm.compile_cache import file_stamp
    key = {k: v for k, v in sorted(vars(args).items()) if k not in ("output_path", "resume", "compile_cache")}
    files = (settings.config, settings.checkpoint, args.lora_choice.path, settings.data_path,
             settings.negative_data_path, settings.init_image, settings.init_latents)
    return dict(args=key, files=[file_stamp(p) for p in files], settings=repr(settings))


def log_startup_notes(args):
    """The notices settings_from_args collected (attention, memory plan, LoRA flags), once loading worked."""
    for level, *message in args.startup_notes:
        logger.log(level, *message)
    args.lora_choice.log_notes()


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=parse_log_level(args.log_level), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)          # every check that needs no model, before any log line
    from ldm import compile_cache
    compile_cache.enable(args.compile_cache, "txt2img", _graph_key(args, settings))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if args.ms_mode == 0 else ms.PYNATIVE_MODE)
    if args.device_target:
        ms.set_device(args.device_target)
    from ldm.pipeline import Text2ImagePipeline
    from ldm.pipeline_inpaint import InpaintPipeline
    from ldm.pipeline_run import run_to_folder
    pipe = (InpaintPipeline if args.inpainting_model else Text2ImagePipeline).from_config(
                                          settings.config, settings.checkpoint,
                                          lora_path=args.lora_choice.path, lora_scale=args.lora_scale,
                                          lora_prefixes=args.lora_choice.prefixes,
                                          adopt_recorded_spec=not args.config,
                                          rescale_zero_snr=args.rescale_zero_snr, attention=args.attention_settings)
    if args.memory_plan is not None:
        pipe.set_micro_batches(args.memory_plan.unet_batch, args.memory_plan.vae_batch)
    if args.ti_ckpt_path:
        from ldm.models.textual_inversion import load_textual_inversion
        load_textual_inversion(pipe.model, args.ti_ckpt_path)
    log_startup_notes(args)

    def started():                               # after the checks that need the model, before any folder
        logger.info("SD %s, sampler %s, %d steps, scale %s, %dx%d, %d x %d per prompt, checkpoint %s, LoRA %s",
                    args.version, settings.sampler, settings.steps, settings.scale, settings.width,
                    settings.height, settings.n_iter, settings.n_samples, settings.checkpoint, settings.lora)
    summary = run_to_folder(pipe, settings, args.output_path, skip_grid=args.skip_grid,
                            skip_save=args.skip_save, resume=args.resume,
                            log=lambda msg: print(msg, file=sys.stderr), started=started)
    for key in ("manifest", "csv", "grid"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
