"""Domains of the recipe's numeric options, and the image-size rule of the model, checked before anything
is built: a NaN learning rate or an image size the UNet cannot halve must be one line at start, not a
NaN checkpoint or a compile traceback after the first step."""
import math

from ldm.errors import UserError
from ldm.train.objective_options import MAX_MULTIRES_ITERATIONS
from ldm.train.optim_args import resolve_optimizer

FLOAT32_MAX = 3.4028234663852886e38

# name -> (test, what the value must be); every float option is also required to be finite
_DOMAINS = {
    "start_learning_rate": (lambda v: v > 0, "> 0"),
    "end_learning_rate": (lambda v: v >= 0, ">= 0"),
    "unet_lr": (lambda v: v >= 0, ">= 0 (0 = start_learning_rate)"),
    "text_encoder_lr": (lambda v: v >= 0, ">= 0 (0 = start_learning_rate)"),
    "lr_scheduler_num_cycles": (lambda v: v >= 1, ">= 1"),
    "adam_eps": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v > 0, "> 0"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "snr_gamma": (lambda v: v >= 0, "> 0 (or 0 = off)"),
    # kohya's objective options (ldm.train.objective_options; their combinations: check_objective_options)
    "min_timestep": (lambda v: v >= 0, ">= 0"),
    "max_timestep": (lambda v: v >= 1, ">= 1 (or unset = the model's timesteps)"),
    "ip_noise_gamma": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "multires_noise_iterations": (lambda v: 0 <= v <= MAX_MULTIRES_ITERATIONS,
                                  f"in [0, {MAX_MULTIRES_ITERATIONS}] (0 = off; each level at least halves the side, "
                                  f"so by {MAX_MULTIRES_ITERATIONS} levels any latent is down to 1 pixel)"),
    "multires_noise_discount": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "huber_c": (lambda v: v > 0, "> 0"),
    "huber_scale": (lambda v: v > 0, "> 0"),
    "v_pred_like_loss": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "drop_text_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "init_loss_scale": (lambda v: v > 0, "> 0"),
    "loss_scale_factor": (lambda v: v >= 1, ">= 1"),
    "lora_alpha": (lambda v: v >= 0, ">= 0 (0 = lora_rank)"),
    "conv_alpha": (lambda v: v >= 0, ">= 0 (0 = conv_dim)"),
    "conv_dim": (lambda v: v >= 0, ">= 0 (0 = no conv LoRA)"),
    "validation_guidance_scale": (lambda v: v >= 0, ">= 0"),
    "image_size": (lambda v: v >= 1, ">= 1"),
    "train_batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 0, ">= 1 (or 0 with max_steps >= 1)"),
    "max_steps": (lambda v: v >= 0, ">= 1 (or 0 = all epochs)"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "decay_steps": (lambda v: v >= 0, ">= 0 (0 = to the end of training)"),
    "scale_window": (lambda v: v >= 1, ">= 1"),
    "lora_rank": (lambda v: v >= 1, ">= 1"),
    "ckpt_save_interval": (lambda v: v >= 1, ">= 1"),
    "ckpt_max_keep": (lambda v: v >= 0, ">= 0 (0 = keep all)"),
    "log_interval": (lambda v: v >= 1, ">= 1"),
    "callback_size": (lambda v: v >= 1, ">= 1"),
    "validation_steps": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "validation_sampling_steps": (lambda v: v >= 1, ">= 1"),
    "seed": (lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)"),
    "min_image_size": (lambda v: v >= 0, ">= 0"),
    "image_filter_size": (lambda v: v >= 0, ">= 0"),
    "num_workers": (lambda v: v >= 1, ">= 1"),
    # data options (ldm.train.data_options)
    "keep_tokens": (lambda v: v >= 0, ">= 0"),
    "caption_tag_dropout_rate": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "caption_dropout_every_n_epochs": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "validation_split": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "min_bucket_reso": (lambda v: v >= 1, ">= 1"),
    "max_bucket_reso": (lambda v: v >= 1, ">= 1"),
    "bucket_reso_steps": (lambda v: v >= 0, ">= 0 (0 = the model's size multiple)"),
}


def check_domains(cfg):
    """Every numeric option finite and inside its domain; ``betas`` two values in [0, 1)."""
    for name, value in sorted(vars(cfg).items()):     # values reach the device as float32
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise UserError(f"{name} must be a finite number (float32: |x| <= 3.4e38), got {value}")
    for name, (ok, what) in _DOMAINS.items():
        value = getattr(cfg, name, None)
        if value is not None and not ok(value):
            raise UserError(f"{name} must be {what}, got {value}")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        raise UserError("set epochs >= 1 or max_steps >= 1")
    if len(cfg.betas) != 2:
        raise UserError(f"betas needs two values, got {cfg.betas}")
    for beta in cfg.betas:
        if not (math.isfinite(beta) and 0 <= beta < 1):
            raise UserError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    resolve_optimizer(cfg)      # optimizer_type -> optim; optimizer_args against that optimiser's keys and domains


PLACEHOLDER_PREFIX = "/path/to/"
_FILE_OPTIONS = {"pretrained_model_path", "custom_text_encoder", "resume", "model_config", "train_config"}


def check_placeholder_paths(cfg, unused=()):
    """MindONE's recipes ship placeholder paths (``/path/to/data``, ``/path/to/class_image``, ...); a run
    left with one would read nothing there, or create the folder at the file-system root (running as
    root). Any string option, or list item, that still starts with ``/path/to/`` is refused, naming the
    option, before anything is read or created. ``unused``: options this run ignores (not refused)."""
    found = []
    for name, value in vars(cfg).items():
        if name in unused:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item.startswith(PLACEHOLDER_PREFIX):
                found.append((name, item))
                break
    if not found:
        return
    if len(found) == 1:
        (name, value), = found
        kind = "file" if name in _FILE_OPTIONS or name.endswith("_file") else "folder"
        raise UserError(f"{name} {value} is MindONE's placeholder: set --{name} to your {kind}")
    raise UserError(f"{', '.join(f'{n} {v}' for n, v in found)} are MindONE's placeholders: set "
                    f"{', '.join('--' + n for n, _ in found)} to your own paths")


def size_multiple(model_config):
    """The image-size multiple a LatentDiffusion YAML needs: the VAE's factor 2^(len(ch_mult)-1) times
    the UNet's 2^(len(channel_mult)-1) (every level halves the latent, and the skip connections must
    meet again on the way up). None when the config does not describe both (e.g. a test stand-in)."""
    from ldm.util import part_params
    try:
        vae = part_params(model_config, "first_stage_config").get("ddconfig") or {}
        unet = part_params(model_config, "unet_config")
        vae_levels, unet_levels = len(vae["ch_mult"]), len(unet["channel_mult"])
    except (KeyError, TypeError, AttributeError):
        return None
    return 2 ** (vae_levels - 1) * 2 ** (unet_levels - 1)


def check_image_size(image_size, model_config, path):
    multiple = size_multiple(model_config)
    if multiple and image_size % multiple:
        lower = max(multiple, image_size // multiple * multiple)
        raise UserError(f"image_size {image_size} does not fit {path}: it must be a multiple of {multiple} "
                        f"(VAE factor x 2^(UNet levels - 1)); try {lower}")
