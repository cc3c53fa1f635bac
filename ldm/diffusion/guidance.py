"""Classifier-free guidance with guidance rescale (Lin et al. 2023, sec. 3.4): the one implementation.

:func:`apply_guidance` is plain arithmetic on numpy arrays or MindSpore Tensors, and also runs inside
a compiled graph (the pipeline's guided UNet call uses it); :func:`cfg_denoiser` wraps a host-side
model function into a sampler's ``denoise_fn``.
"""
from ldm.diffusion import xp


def _std_per_sample(x):
    """Standard deviation over all axes but the first, shaped [N, 1, ...]. The ddof does not matter
    here (guidance rescale uses a ratio of two of these), so this is the population std."""
    flat = x.reshape((x.shape[0], -1))
    centred = flat - flat.mean(1).reshape((-1, 1))
    return ((centred * centred).mean(1) ** 0.5).reshape((-1,) + (1,) * (len(x.shape) - 1))


def apply_guidance(out_uncond, out_cond, scale, guidance_rescale=None):
    """uncond + scale (cond - uncond), then (guidance_rescale phi > 0) pull its per-sample std back
    towards the conditional output's: phi * guided * std(cond)/std(guided) + (1 - phi) * guided.

    scale / guidance_rescale: Python floats or 0-d Tensors; None or 0 for guidance_rescale skips it.
    """
    guided = out_uncond + scale * (out_cond - out_uncond)
    if guidance_rescale is None or (isinstance(guidance_rescale, (int, float)) and guidance_rescale <= 0):
        return guided
    rescaled = guided * (_std_per_sample(out_cond) / _std_per_sample(guided))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided


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
        return apply_guidance(out_uncond, out_cond, float(scale), float(guidance_rescale))

    return denoise
