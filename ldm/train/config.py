"""Training recipe: one table of options that drives the YAML reader, the CLI flags and ``-h``.

Every key of a train YAML is also a ``--flag``; values given on the command line win over the YAML,
and a YAML key that is not in :data:`OPTIONS` is an error naming it. Every flag of MindONE's
``examples/stable_diffusion_v2/train_text_to_image.py`` (and so every key of its ``train_config_*.yaml``
recipes) is accepted with MindONE's meaning and default, except where one of ours already means the
same thing (see ``help`` of each; MindONE's ``mode`` combines with our ``jit``, see :func:`parse_config`).
Relative ``train_config`` / ``model_config`` paths that do not exist from the working directory are
looked up from the repository root, as MindONE resolves them from its script folder.
"""
import argparse
import math
import os

from ldm.errors import UserError
from ldm.train.data_options import BUCKET_OPTIONS, CAPTION_OPTIONS, CHOICES as DATA_CHOICES, check_data_options
from ldm.train.optim_args import OPTIMIZERS, optimizer_type_name, parse_optimizer_args


def integer(value):
    """An int from YAML or the command line; 2.0 is 2, but 2.5, True or "nan" are errors (int() would
    truncate 2.5 and turn True into 1 silently)."""
    if isinstance(value, bool):
        raise ValueError("not an integer")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError("not an integer")
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        number = float(text)            # "1e3" is 1000; "2.5" and "nan" fall to the error below
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError("not an integer") from None
        return int(number)


def str2bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off", "none", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def str_list(value):
    """A list given in YAML, or a comma-separated string on the command line."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def prompt_list(value):
    """Validation prompts: a YAML list, or '|'-separated on the command line (prompts hold commas)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split("|") if v.strip()]


def float_list(value):
    return [float(v) for v in str_list(value)]


def optional_bool(value):
    """A boolean, or None (unset: the model config decides)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return str2bool(value)


def optional_integer(value):
    """None (unset, e.g. ``max_timestep``: the model's number of timesteps) or a whole number."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return integer(value)


def attention_chunk_rows(value):
    """None (unset: automatic chunks) or a positive whole number of query rows."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    rows = integer(value)
    if rows <= 0:
        raise ValueError("must be a positive number of query rows")
    return rows


def prediction_type_name(value):
    """'' (the model config's) or a prediction type in any spelling (v, velocity, eps, epsilon, ...)."""
    from ldm.diffusion.prediction import normalize_prediction_type
    return normalize_prediction_type(value) if str(value).strip() else ""


def log_level_name(value):
    """MindONE's ``logging.INFO`` spelling, or INFO / info / 20: returns the level name (``INFO``)."""
    import logging
    text = str(value).strip()
    if text.lower().startswith("logging."):
        text = text[len("logging."):]
    if text.lstrip("-").isdigit():
        name = logging.getLevelName(int(text))
        if name.startswith("Level "):
            raise ValueError("unknown log level number")
        return name
    if text.upper() not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
        raise ValueError("use logging.DEBUG, logging.INFO, logging.WARNING or logging.ERROR")
    return "WARNING" if text.upper() == "WARN" else text.upper()


def log_level_value(name):
    import logging
    return logging.getLevelName(log_level_name(name))


def scheduler_name(value):
    """A scheduler name; MindONE's ``multi_step_decay`` is constant: its train_text_to_image.py passes
    no milestones (create_scheduler(milestones=None)), so the rate never steps down."""
    name = str(value).strip()
    return "constant" if name == "multi_step_decay" else name


def str_or_false(value):
    """``resume``: False/True, or a path to a train_resume.ckpt."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "false", "none", ""):
        return text.lower() == "true"
    return text


# name -> (type, default, help). Grouped as in MindONE's recipes.
OPTIONS = {
    # --- model and data
    "model_config": (str, "", "model YAML (configs/*.yaml): UNet/VAE/text-encoder shapes and prediction_type"),
    "pretrained_model_path": (str, "", "weights to start from (MindSpore .ckpt, torch .ckpt, .safetensors); "
                                       "empty = random init (only sensible for tiny test models)"),
    "pretrained_model_file": (str, "", "older MindONE: a file name inside the folder pretrained_model_path "
                                       "(the two are joined when this is set)"),
    "data_path": (str_list, [], "image folder(s): MindONE's img_txt.csv (columns dir,text), metadata.jsonl "
                                "(file_name + text), image + caption files (img.png + img.txt), or kohya repeat "
                                "folders (N_name); several folders: a YAML list or comma-separated"),
    "output_path": (str, "output", "where ckpt/, logs, metrics.csv, loss_curve.png and validation/ go"),
    "image_size": (integer, 512, "training resolution (square): resize shortest side, then crop"),
    "random_crop": (str2bool, False, "random crop instead of center crop"),
    "random_flip": (optional_bool, None, "random horizontal flip; unset = random_crop's value (MindONE flips "
                                         "whenever it random-crops)"),
    "min_image_size": (integer, 0, "skip images whose shorter side is below this (0 = image_size // 2); "
                               "image_filter_size (MindONE's name) wins when set"),
    "filter_small_size": (str2bool, True, "MindONE: skip images whose shorter side is below image_filter_size "
                                          "(False: keep them, upscaled; unreadable files are skipped anyway)"),
    "image_filter_size": (integer, 0, "MindONE: the shorter-side threshold of filter_small_size "
                                  "(0 = min_image_size's rule, image_size // 2, which is MindONE's 256 at 512 px)"),
    "replace_small_images": (str2bool, True, "MindONE: fill the slots of skipped images with copies of kept ones "
                                             "(MindONE's order: kept images n, n-1, ..., 1 for n skipped), so an "
                                             "epoch keeps the listed number of samples"),
    "drop_text_prob": (float, 0.1, "probability of replacing a caption by the empty prompt (for CFG)"),
    "cache_latents": (str2bool, False, "encode every image/caption once with the frozen VAE/text encoder and "
                                       "train on the cache (no crop/flip randomness after the first pass)"),
    # --- objective
    "prediction_type": (prediction_type_name, "", "v | eps (also velocity, epsilon, v_prediction); "
                                                  "empty = the model config's prediction_type"),
    "snr_gamma": (float, 0.0, "min-SNR-gamma loss weighting (0 = off; 5.0 is the paper's choice)"),
    "debiased_estimation_loss": (str2bool, False, "kohya-ss's debiased-estimation weighting: eps loss x "
                                 "1/sqrt(SNR), v loss x 1/(SNR+1) (SNR clipped to [1e-3, 1000]); with "
                                 "snr_gamma the two weights multiply"),
    "noise_offset": (float, 0.0, "add noise_offset * N(0,1) per (sample, channel) to the noise"),
    "noise_offset_random_strength": (str2bool, False, "kohya: the offset's strength is noise_offset x U(0,1), "
                                                      "drawn per sample (needs noise_offset)"),
    "adaptive_noise_scale": (float, 0.0, "kohya: add adaptive_noise_scale x |mean of the latents| (per sample "
                                         "and channel) to the offset strength, clamped at 0 (needs noise_offset)"),
    "multires_noise_iterations": (integer, 0, "kohya: pyramid (multires) noise levels, 0 = off (6-10 "
                                              "suggested); at most 16 (past that every level is 1 pixel)"),
    "multires_noise_discount": (float, 0.3, "kohya: level i of the pyramid noise is weighted discount^i; in (0, 1]"),
    "ip_noise_gamma": (float, 0.0, "kohya: input perturbation: x_t is made from noise + ip_noise_gamma x N(0,1), "
                                   "the target from the noise (0 = off; about 0.1 suggested)"),
    "ip_noise_gamma_random_strength": (str2bool, False, "kohya: gamma x U(0,1) per sample (needs ip_noise_gamma)"),
    "rescale_zero_snr": (optional_bool, None, "rescale betas to zero terminal SNR (use with v-prediction); "
                                              "unset = the model config's rescale_zero_snr"),
    "min_timestep": (integer, 0, "kohya: training timesteps are drawn from [min_timestep, max_timestep)"),
    "max_timestep": (optional_integer, None, "kohya: upper end (excluded) of the training timesteps; unset = the "
                                             "model's number of timesteps (1000 for SD)"),
    "loss_type": (str, "l2", "kohya: l2 | l1 | huber (2c(sqrt(d^2+c^2)-c)) | smooth_l1 (2(sqrt(d^2+c^2)-c)), c the "
                             "threshold of huber_schedule at each sample's t; the weights above multiply it"),
    "huber_schedule": (str, "snr", "kohya: constant (c = huber_c x huber_scale) | exponential (huber_scale x "
                                   "huber_c^(t/T)) | snr ((1-huber_c)/(1+sigma_t)^2 + huber_c)"),
    "huber_c": (float, 0.1, "kohya: the Huber threshold parameter (> 0) of huber / smooth_l1"),
    "huber_scale": (float, 1.0, "kohya: scales the constant and exponential Huber thresholds (> 0)"),
    "scale_v_pred_loss_like_noise_pred": (str2bool, False, "kohya (v models): loss x SNR/(SNR+1) (SNR at most "
                                                           "1000): a v loss that weighs timesteps as an eps loss"),
    "v_pred_like_loss": (float, 0.0, "kohya (eps models): loss + v_pred_like_loss x loss x (SNR+1)/SNR, i.e. adds "
                                     "this much of the v loss (SNR at most 1000; 0 = off)"),
    # --- optimisation
    "train_batch_size": (integer, 1, "images per step per device"),
    "epochs": (integer, 10, "passes over the data"),
    "max_steps": (integer, 0, "stop after this many optimiser steps (0 = run all epochs)"),
    "start_learning_rate": (float, 1e-5, "learning rate after warm-up"),
    "end_learning_rate": (float, 0.0, "learning rate at the end of decay"),
    "warmup_steps": (integer, 0, "linear warm-up steps from 0"),
    "decay_steps": (integer, 0, "decay length in steps after warm-up (0 = to the end of training)"),
    "scheduler": (scheduler_name, "constant", "constant | cosine_decay | polynomial_decay | cosine_with_restarts "
                                              "(MindONE's multi_step_decay: constant, as its script passes no "
                                              "milestones)"),
    "lr_scheduler_num_cycles": (integer, 1, "kohya-ss: cosine_with_restarts' number of cosine decays (hard "
                                            "restarts) over decay_steps"),
    "optim": (str, "adamw", "adamw | adam | momentum | sgd | lion | lamb | adafactor | prodigy (prodigy: "
                            "start_learning_rate is a multiplier of its own estimate, usually 1.0)"),
    "optimizer_type": (optimizer_type_name, "", "kohya-ss's name of optim (AdamW, AdaFactor, Lion, Prodigy, SGD); "
                                               "wins over optim when set"),
    "optimizer_args": (parse_optimizer_args, {}, "kohya-ss: the optimiser's own options as key=value items "
                                                 "(e.g. \"d_coef=2 use_bias_correction=True\"; a YAML list or "
                                                 "mapping); betas, eps, weight_decay there win over the flags"),
    "unet_lr": (float, 0.0, "kohya-ss: the UNet's peak learning rate (0 = start_learning_rate); the schedule "
                            "scales it as it scales start_learning_rate"),
    "text_encoder_lr": (float, 0.0, "kohya-ss: the text encoder's peak learning rate (full or LoRA; 0 = "
                                    "start_learning_rate)"),
    "betas": (float_list, [0.9, 0.999], "Adam betas (beta1, beta2); momentum uses beta1"),
    "adam_eps": (float, 1e-8, "Adam epsilon"),
    "weight_decay": (float, 1e-2, "decoupled weight decay (adamw) or L2 (others)"),
    "gradient_accumulation_steps": (integer, 1, "micro-batches per optimiser step"),
    "clip_grad": (str2bool, False, "clip gradients by global norm"),
    "max_grad_norm": (float, 1.0, "global norm for clip_grad"),
    "use_ema": (str2bool, False, "keep an exponential moving average of the trained weights"),
    "ema_decay": (float, 0.9999, "EMA decay"),
    "train_text_encoder": (str2bool, False, "also train the text encoder (full fine-tune)"),
    "attention": (str, "", "auto | standard | chunked | flash: how the UNet and VAE compute attention (unset = "
                           "the model config's attention key, else flash if enable_flash_attention, else auto: "
                           "flash on Ascend, chunked when a call's scores pass 512 MiB, else standard)"),
    "attention_chunk": (attention_chunk_rows, None, "query rows per chunk of chunked attention (unset = as many "
                                                    "as keep one chunk's fp32 scores within 512 MiB)"),
    "recompute": (optional_bool, None, "recompute UNet blocks in backward (less memory); sets the model "
                                       "config's unet use_checkpoint (unset = the config's value)"),
    # --- precision and loss scaling (ldm.train.precision; fp16 runs on CPU too, bf16 on Ascend only)
    "amp_level": (str, "O0", "O0 (the model YAML's dtype) | O1 | O2 | O3: UNet convs/matmuls in amp_dtype, norms/softmax fp32"),
    "amp_dtype": (str, "fp16", "fp16 | bf16 (not on CPU) compute type for amp_level != O0"),
    "init_loss_scale": (float, 65536.0, "initial dynamic loss scale (when the UNet computes in fp16/bf16)"),
    "loss_scale_factor": (float, 2.0, "dynamic loss scale up/down factor"),
    "scale_window": (integer, 1000, "overflow-free steps before the loss scale grows"),
    "drop_overflow_update": (str2bool, True, "skip the optimiser step when gradients overflow"),
    # --- LoRA
    "use_lora": (str2bool, False, "train LoRA adapters only (base weights frozen); saves LoRA weights only"),
    "lora_rank": (integer, 4, "LoRA rank"),
    "lora_alpha": (float, 0.0, "LoRA alpha (scale = alpha / rank; 0 = rank, i.e. scale 1)"),
    "conv_dim": (integer, 0, "kohya's LoCon conv_dim: LoRA rank on the UNet's 3x3 convs (ResBlocks, down/upsamplers; "
                             "down k x k, up 1x1); 0 = off"),
    "conv_alpha": (float, 0.0, "kohya's conv_alpha: conv LoRA scale = conv_alpha / conv_dim (0 = conv_dim, scale 1; "
                               "kohya's default when unset is 1)"),
    "use_dora": (str2bool, False, "DoRA (weight-decomposed LoRA, as peft): W' = m * (W + s*up@down) / ||...|| per "
                                  "output row, m trained (starts at ||W||); on every adapted layer"),
    "lora_rank_pattern": (str, "", "YAML file of per-layer rank/alpha (as peft's rank_pattern/alpha_pattern): "
                                   "regex key -> rank or {rank, alpha}, matched against whole dotted suffixes of "
                                   "layer names; a key that matches no layer is an error"),
    "lora_ft_unet": (str2bool, True, "LoRA on UNet attention to_q/to_k/to_v/to_out"),
    "lora_ft_text_encoder": (str2bool, False, "LoRA on text-encoder attention projections"),
    "lora_scale": (float, 1.0, "MindONE: multiplies the LoRA path during training (scale = alpha / rank * lora_scale)"),
    "lora_fp16": (str2bool, True, "MindONE: LoRA layers (base projection + adapters) compute in fp16, weights "
                                  "kept fp32, on Ascend/GPU; CPU trains in fp32 (one notice line)"),
    # --- checkpoints, resume, logs
    "ckpt_save_interval": (integer, 1, "save every N epochs (or N steps with step_mode)"),
    "step_mode": (str2bool, False, "ckpt_save_interval counts steps, files are sd-{step}.ckpt"),
    "ckpt_max_keep": (integer, 10, "keep only the last N sd-*.ckpt files (0 = all)"),
    "resume": (str_or_false, False, "True: continue from output_path/ckpt/train_resume.ckpt; or a path"),
    "log_interval": (integer, 1, "write a metrics.csv row every N steps"),
    "callback_size": (integer, 1, "MindONE: log one loss line (epoch, step, loss, lr, step time) every N steps"),
    "log_level": (log_level_name, "logging.INFO", "MindONE: logging.DEBUG | logging.INFO | logging.WARNING | "
                                                  "logging.ERROR (INFO, 20, ... also accepted)"),
    "profile": (str2bool, False, "MindONE: run mindspore.Profiler over the training into output_path/profiler; "
                                 "as in MindONE the run is cut to 3 epochs (max_steps still caps it)"),
    "validation_prompts": (prompt_list, [], "prompts sampled every validation_steps into output_path/validation"),
    "validation_steps": (integer, 0, "every N steps: sample validation_prompts and compute the validation loss "
                                     "(validation_split / validation_data_path) (0 = off)"),
    "validation_sampler": (str, "ddim", "sampler name for validation images"),
    "validation_sampling_steps": (integer, 20, "sampler steps for validation images"),
    "validation_guidance_scale": (float, 7.5, "classifier-free guidance scale for validation images"),
    # --- runtime
    "seed": (integer, 42, "seed for data order, noise, timesteps, crops, caption dropout"),
    "device_target": (str, "", "CPU | GPU | Ascend (empty = MindSpore's default)"),
    "mode": (integer, 0, "MindONE: 0 = graph (train step compiled with ms.jit), 1 = PyNative (not compiled); "
                     "the step is compiled only when mode is 0 and jit is True"),
    "jit": (str2bool, True, "compile the train step with ms.jit (graph mode); False = PyNative whatever mode says"),
    "use_parallel": (str2bool, False, "data-parallel over all ranks (launch with msrun or mpirun)"),
    "dataset_sink_mode": (str2bool, False, "MindONE's Ascend sink switch; MindSpore cannot sink on CPU: one notice "
                                           "line, steps fed from the host (docs/data_sink.md)"),
    "show_progress": (str2bool, True, "tqdm progress bar"),
    "compile_cache": (str, os.environ.get("MSD_COMPILE_CACHE", "off"),
                      "folder for MindSpore's compile cache (default $MSD_COMPILE_CACHE, else off): an identical "
                      "later run loads the compiled steps instead of compiling them; one sub-folder per distinct "
                      "run (settings, model config and starting weights, MindSpore version, library code)"),
    # --- MindONE keys with no counterpart here (accepted so its command lines and recipes run unchanged)
    "version": (str, "", "older MindONE: the SD version (2.1, 2.0-v, 1.5, ...); its training script only "
                         "logged it; here it is only recorded in args.yaml (the model comes from model_config)"),
    "custom_text_encoder": (str, "", "MindONE: a checkpoint whose cond_stage_model.* weights replace the text "
                                     "encoder's after pretrained_model_path is loaded (e.g. a Chinese CLIP)"),
    "unet_initialize_random": (str2bool, False, "MindONE: load pretrained_model_path without its UNet weights "
                                                "(the UNet starts from random init)"),
    "enable_flash_attention": (optional_bool, None, "MindONE: flash attention in the UNet (unset = the model "
                                                    "config's): Ascend's FlashAttentionScore kernel; where there is "
                                                    "none (CPU, GPU) one notice line and chunked attention"),
    "loss_scaler_type": (str, "dynamic", "MindONE: dynamic | static loss scaling (amp only; static keeps "
                                         "init_loss_scale)"),
    "enable_modelarts": (str2bool, False, "MindONE: run on Huawei ModelArts; not supported here (one notice line, "
                                          "data is read from data_path)"),
    "json_data_path": (str, "mindone/examples/stable_diffusion_v2/ldm/data/num_samples_64_part.json",
                       "MindONE: ModelArts sample-count JSON (used only with enable_modelarts; ignored here)"),
    "num_workers": (integer, 1, "MindONE: number of ModelArts workers (nodes) its data split uses with "
                            "enable_modelarts; no effect here (each rank reads its shard on the host)"),
}

def _insert_after(table, key, extra):
    """``table`` with ``extra`` placed after ``key`` (so -h lists related options together)."""
    out = {}
    for name, spec in table.items():
        out[name] = spec
        if name == key:
            out.update(extra)
    return out


OPTIONS = _insert_after(OPTIONS, "cache_latents", {**CAPTION_OPTIONS, **BUCKET_OPTIONS})

CHOICES = {
    **DATA_CHOICES,
    "attention": ("", "auto", "standard", "chunked", "flash"),
    "scheduler": ("constant", "cosine_decay", "polynomial_decay", "cosine_with_restarts"),
    "optim": OPTIMIZERS,
    "amp_level": ("O0", "O1", "O2", "O3"),
    "amp_dtype": ("fp16", "bf16"),
    "device_target": ("", "CPU", "GPU", "Ascend"),
    "mode": (0, 1),
    "loss_scaler_type": ("dynamic", "static"),
    "loss_type": ("l2", "l1", "huber", "smooth_l1"),
    "huber_schedule": ("constant", "exponential", "snr"),
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SEVERAL_VALUES = ("optimizer_args",)   # flags that take one or more words


class _OneLineParser(argparse.ArgumentParser):
    """A usage mistake (unknown flag, missing value) is one UserError line, not argparse's usage block."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def build_parser(table=None, description="Fine-tune Stable Diffusion (eps or v objective, LoRA, EMA, resume, "
                 "data-parallel). Every key of --train_config is also a flag; flags win over the YAML.",
                 recipe_help="training recipe YAML (configs/train/*.yaml)"):
    """One flag per option of ``table`` (default: train_text_to_image.py's), plus --train_config/-c."""
    parser = _OneLineParser(allow_abbrev=False, description=description, argument_default=argparse.SUPPRESS)
    parser.add_argument("--train_config", "-c", help=recipe_help)
    for name, (_, default, text) in (table or OPTIONS).items():
        nargs = "+" if name in SEVERAL_VALUES else None     # kohya-ss: --optimizer_args a=1 b=2
        parser.add_argument(f"--{name}", metavar="V", nargs=nargs, help=f"{text} (default: {default!r})")
    return parser


def convert_value(name, value, source, table=None, choices=None):
    """A recipe or flag value through its option's converter and allowed choices (one UserError line)."""
    table, choices = table or OPTIONS, CHOICES if choices is None else choices
    try:
        value = table[name][0](value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: bad value for {name}: {value!r} ({exc})") from exc
    if name in choices and value not in choices[name]:
        allowed = " | ".join(str(c) for c in choices[name] if c != "")
        raise UserError(f"{source}: {name} must be one of {allowed}, got {value!r}")
    return value


def repo_path(path):
    """``path`` as given if it exists (or is absolute or empty), else relative to the repository root:
    MindONE joins recipe and model-config paths to its script folder, so its recipes name
    ``configs/...`` whatever the working directory is."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(REPO_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def read_recipe(path, table=None, choices=None, tool="train_text_to_image.py"):
    """Read a train YAML into a flat dict of converted values; unknown keys are an error naming them."""
    table = table or OPTIONS
    path = repo_path(path)
    if not os.path.isfile(path):
        raise UserError(f"train config not found: {path}")
    from ldm.util import safe_load_yaml
    raw = safe_load_yaml(path)      # duplicate keys and non-UTF-8 bytes are one error line too
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise UserError(f"train config {path} does not hold a mapping")
    unknown = sorted(k for k in raw if k not in table)
    if unknown:
        raise UserError(f"train config {path}: unknown key(s) {', '.join(unknown)} "
                        f"(see {tool} -h for the accepted keys)")
    return {k: convert_value(k, v, path, table, choices) for k, v in raw.items()}


def merge_settings(parser, table=None, choices=None, tool="train_text_to_image.py", argv=None):
    """Defaults <- recipe YAML (--train_config) <- flags, as a dict (``train_config`` the recipe's path)."""
    table = table or OPTIONS
    cli = vars(parser.parse_args(argv))
    values = {name: spec[1] for name, spec in table.items()}
    recipe_path = cli.pop("train_config", None)
    if recipe_path:
        values.update(read_recipe(recipe_path, table, choices, tool))
    for name, value in cli.items():
        values[name] = convert_value(name, value, "command line", table, choices)
    values["train_config"] = repo_path(recipe_path) if recipe_path else ""
    return values


def resolve_model_paths(values, aliases=None):
    """In place: model_config as a repo path (a MindONE model YAML we do not ship, named in ``aliases``,
    read as ours) and pretrained_model_path joined with older MindONE's pretrained_model_file."""
    model_config = values["model_config"]
    if aliases and model_config in aliases and not os.path.exists(repo_path(model_config)):
        model_config = aliases[model_config]
    values["model_config"] = repo_path(model_config)
    if values["pretrained_model_file"]:
        values["pretrained_model_path"] = os.path.join(values["pretrained_model_path"], values["pretrained_model_file"])
    return values


def parse_config(argv=None):
    """Defaults <- YAML (--train_config) <- CLI flags; validated. Returns an argparse.Namespace."""
    values = resolve_model_paths(merge_settings(build_parser(), argv=argv))
    cfg = argparse.Namespace(**values)
    validate(cfg)
    cfg.jit = bool(cfg.jit) and cfg.mode == 0  # MindONE's mode 1 (PyNative) and our jit False both mean eager
    return cfg


def validate(cfg, unused=()):
    """Everything that can be checked before a model is built or the output folder exists; each failure
    is one clear line (see ldm.train.checks for the numeric domains and MindONE's placeholder paths,
    which options in ``unused`` may keep)."""
    from ldm.train.checks import check_domains, check_image_size, check_placeholder_paths
    check_placeholder_paths(cfg, unused)
    if not cfg.model_config:
        raise UserError("model_config is required (e.g. --model_config configs/tiny-v2-vpred.yaml)")
    if not os.path.isfile(cfg.model_config):
        raise UserError(f"model_config not found: {cfg.model_config}")
    check_domains(cfg)
    if not cfg.data_path:
        raise UserError("data_path is required (a folder with images and img_txt.csv)")
    for path in cfg.data_path:
        if not os.path.isdir(path):
            raise UserError(f"data_path {'is not a folder' if os.path.exists(path) else 'not found'}: {path}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"data_path is not readable: {path}")
    check_output_path(cfg.output_path)
    if cfg.pretrained_model_path and not os.path.isfile(cfg.pretrained_model_path):
        raise UserError(f"pretrained_model_path not found: {cfg.pretrained_model_path}")
    if cfg.use_lora and not (cfg.lora_ft_unet or cfg.lora_ft_text_encoder):
        raise UserError("use_lora needs lora_ft_unet and/or lora_ft_text_encoder")
    from ldm.train.adapters import check_adapter_options
    check_adapter_options(cfg)          # conv_dim / conv_alpha / use_dora / lora_rank_pattern
    if cfg.custom_text_encoder and not os.path.isfile(cfg.custom_text_encoder):
        raise UserError(f"custom_text_encoder not found: {cfg.custom_text_encoder}")
    if isinstance(cfg.resume, str) and not os.path.isfile(cfg.resume):
        raise UserError(f"resume checkpoint not found: {cfg.resume}")
    has_val_set = bool(getattr(cfg, "validation_split", 0) or getattr(cfg, "validation_data_path", ""))
    if cfg.validation_steps and not (cfg.validation_prompts or has_val_set):
        raise UserError("validation_steps is set but there is nothing to validate: set validation_prompts "
                        "(images) and/or validation_split / validation_data_path (validation loss)")
    if has_val_set and not cfg.validation_steps:
        raise UserError("validation_split / validation_data_path needs validation_steps (how often to compute "
                        "the validation loss)")
    from ldm.diffusion.samplers import SAMPLER_NAMES
    if cfg.validation_sampler not in SAMPLER_NAMES:      # checked even when validation is off: a typo
        raise UserError(f"validation_sampler {cfg.validation_sampler!r} is not a sampler; choose one of "
                        f"{', '.join(SAMPLER_NAMES)}")
    from ldm.util import load_config
    model_config = load_config(cfg.model_config)
    check_image_size(cfg.image_size, model_config, cfg.model_config)
    check_data_options(cfg, model_config)
    from ldm.train.objective_options import check_objective_options
    check_objective_options(cfg, model_config)


def graph_key(cfg):
    """What decides a training run's compiled graphs (see ldm.compile_cache): every setting but where
    outputs go, and content stamps of the model config and the starting weights."""
    from ldm.compile_cache import file_stamp
    skip = ("output_path", "compile_cache", "resume", "show_progress", "log_level")
    settings = {k: v for k, v in sorted(vars(cfg).items()) if k not in skip}
    files = [file_stamp(getattr(cfg, k, "")) for k in ("model_config", "pretrained_model_path", "custom_text_encoder",
                                                       "lora_rank_pattern")]      # the pattern shapes the adapters
    return dict(settings=settings, files=files)


def enable_compile_cache(cfg, tool, **extra):
    """Point MindSpore's compile cache at this run's sub-folder of ``cfg.compile_cache``, before the first
    graph is built (MindSpore reads the setting once). ``extra``: whatever else changes which graphs
    compile, e.g. DreamBooth's class images still to draw (a run that samples them compiles the
    sampler first; one that finds them does not, and must not load the other's graphs: MindSpore 2.8
    then bound the step's inputs to the wrong graph). Returns the folder or None."""
    from ldm import compile_cache
    return compile_cache.enable(cfg.compile_cache, tool, graph_key(cfg), extra)


def check_output_path(path, label="output_path"):
    """``path`` (the option ``label``) must be a folder or creatable as one: its nearest existing ancestor
    is a writable folder (a regular file on the way is one line here, not an OSError deep in the run)."""
    if not path:
        raise UserError(f"{label} is empty")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is a file" if probe == os.path.abspath(path) else f"is below a file ({probe})"
        raise UserError(f"{label} {path} {what}: give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{label} {path}: {probe} is not writable")
