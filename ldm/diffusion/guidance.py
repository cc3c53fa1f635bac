"""Classifier-free guidance around a model call, with guidance rescale (Lin et al. 2023, sec. 3.4)."""
from ldm.diffusion import xp


def apply_guidance(out_uncond, out_cond, scale, guidance_rescale=0.0):
    """uncond + scale (cond - uncond), then optionally pull its per-sample std back towards the
    conditional output's: phi * guided * std(cond)/std(guided) + (1 - phi) * guided."""
    guided = out_uncond + float(scale) * (out_cond - out_uncond)
    if guidance_rescale > 0:
        rescaled = guided * (xp.std_per_sample(out_cond) / xp.std_per_sample(guided))
        phi = float(guidance_rescale)
        guided = phi * rescaled + (1.0 - phi) * guided
    return guided


def cfg_denoiser(model_fn, cond, uncond, scale, guidance_rescale=0.0):
    """Wrap ``model_fn(x, t, context) -> output`` into a sampler's ``denoise_fn(x, t)``.

    One model call on the doubled batch [uncond; cond] per step. With scale == 1 (or uncond None) the
    unconditional half is skipped.
    """
    if uncond is None or scale == 1.0:
        return lambda x, t: model_fn(x, t, cond)
    context = xp.concat([uncond, cond], 0)

    def denoise(x, t):
        out = model_fn(xp.concat([x, x], 0), t, context)
        out_uncond, out_cond = xp.split_half(out)
        return apply_guidance(out_uncond, out_cond, scale, guidance_rescale)

    return denoise
