"""Validation images during training: sample the recipe's prompts with the current (EMA) weights
through ldm.pipeline (helper C's samplers) into ``output_path/validation/step{N}_{i}.png``."""
import os

from PIL import Image

_PIPELINES = {}


def sample_validation_images(model, cfg, model_config, prediction_type, step):
    """Write one PNG per validation prompt (fixed seeds, so images are comparable across steps)."""
    from ldm.pipeline import Text2ImagePipeline
    key = id(model)
    if key not in _PIPELINES:
        _PIPELINES[key] = Text2ImagePipeline(model, model_config, compile=cfg.jit)
    pipe = _PIPELINES[key]
    pipe.prediction_type = prediction_type
    options = {"rescale_zero_snr": True, "timestep_spacing": "trailing"} if cfg.rescale_zero_snr else None
    result = pipe.generate(list(cfg.validation_prompts), width=cfg.image_size, height=cfg.image_size,
                           steps=cfg.validation_sampling_steps, sampler=cfg.validation_sampler,
                           scale=cfg.validation_guidance_scale, seed=cfg.seed, sampler_options=options,
                           guidance_rescale=0.7 if cfg.rescale_zero_snr else 0.0)
    folder = os.path.join(cfg.output_path, "validation")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(result.images):
        path = os.path.join(folder, f"step{step}_{i}.png")
        tmp = path + ".tmp.png"
        Image.fromarray(image).save(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths
