"""Validation images during training: the recipe's prompts, drawn with fixed seeds (comparable across
steps) into ``output_path/validation/step{N}_{i}.png``.

The sampling function is handed in by whoever starts training (train_text_to_image.py passes the
text-to-image pipeline), so ldm.train never imports ldm.pipeline; it samples the model's own
DiffusionSpec (zero terminal SNR brings trailing timesteps and guidance rescale with it).
"""
import os

from ldm.errors import UserError
from ldm.io.images import save_png_atomic


def check_validation(cfg, spec):
    """Build the validation sampler on the run's DiffusionSpec and plan its steps once, before training:
    a limit of that sampler (e.g. more steps than the schedule has) is one line at start, not an error
    after the first validation_steps steps."""
    if not cfg.validation_steps:
        return
    from ldm.diffusion.samplers import get_sampler
    where = f"validation_sampler {cfg.validation_sampler} with validation_sampling_steps {cfg.validation_sampling_steps}"
    if cfg.validation_sampling_steps > spec.num_train_timesteps:
        raise UserError(f"{where}: at most {spec.num_train_timesteps} steps (the model's training timesteps)")
    try:
        get_sampler(cfg.validation_sampler, spec=spec).set_timesteps(int(cfg.validation_sampling_steps))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from exc


def write_validation_images(sample_fn, cfg, step):
    """``sample_fn(prompts, width, height, steps, sampler, scale, seed) -> uint8 (N, H, W, 3)``.
    Returns (the paths written, the images)."""
    images = sample_fn(list(cfg.validation_prompts), width=cfg.image_size, height=cfg.image_size,
                       steps=cfg.validation_sampling_steps, sampler=cfg.validation_sampler,
                       scale=cfg.validation_guidance_scale, seed=cfg.seed)
    folder = os.path.join(cfg.output_path, "validation")
    paths = [os.path.join(folder, f"step{step}_{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        save_png_atomic(image, path)
    return paths, images
