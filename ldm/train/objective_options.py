"""The noise and timesteps that go into the training objective, with kohya-ss's options (its flag names
and formulas, ``library/train_util.py`` get_noise_noisy_latents_and_timesteps and
``library/custom_train_functions.py``, read 2026-12):

* ``min_timestep`` / ``max_timestep``: t uniform in [min_timestep, max_timestep).
* ``noise_offset`` (+ ``noise_offset_random_strength``, ``adaptive_noise_scale``): per (sample, channel)
  ``noise += s * offset_noise`` with ``s = max(noise_offset * u + adaptive_noise_scale * |mean_hw(latents)|, 0)``,
  ``u = 1`` or U(0, 1) with random strength.
* ``multires_noise_iterations`` / ``multires_noise_discount`` (pyramid noise): ``noise += sum_i discount^i *
  up(N(0, 1) at (H, W) / r_i^i)`` for i = 0, 1, ... with r_i ~ U(2, 4), bilinear upsampling as torch's
  ``nn.Upsample(mode="bilinear")`` (align_corners False), stopping after the first 1-pixel level; then
  ``noise /= std(noise)``. Applied after the offset, as kohya does.
* ``ip_noise_gamma`` (+ ``ip_noise_gamma_random_strength``): input perturbation, x_t is made from
  ``noise + gamma * u * N(0, 1)`` while the target keeps ``noise``.

Where kohya draws one random number per batch (``torch.rand(1)`` for both random strengths, one ``r`` per
pyramid level, one std over the whole batch), every draw here is per sample: a sample's noise depends
only on (seed, epoch, sample), never on the batch size, the number of ranks or where a run resumed, as
everything else the data layer draws (ldm.data.dataset). The extra draws come from the sample's own
``aux_seed`` (drawn last by ``ImageCaptionDataset.draws``), one child stream per option, so switching one
option on changes no other option's numbers.

Everything here is float64 numpy on the host; the result is cast to float32 once.
"""
import dataclasses
import typing

import numpy as np

# key words of the per-option child streams of a sample's aux_seed
AUX_STREAMS = {"offset": 1, "pyramid": 2, "ip": 3, "inpaint_mask": 4}   # inpaint_mask: ldm.train.inpaint
# pyramid levels past which nothing changes: level i divides the side by r^i with r >= 2, so any latent
# side up to 2**15 (a 262144-pixel-wide image at the VAE's factor 8) is one pixel by level 15, where kohya's
# loop stops: more iterations would draw nothing more (the recipe's domain, ldm.train.checks)
MAX_MULTIRES_ITERATIONS = 16


class TrainingNoise(typing.NamedTuple):
    """float32 [N, C, h, w]: ``target`` is the noise the target is made of (eps, and v's eps part),
    ``input`` the noise x_t is made of (the same array without input perturbation)."""
    target: np.ndarray
    input: np.ndarray


@dataclasses.dataclass(frozen=True)
class NoiseSettings:
    noise_offset: float = 0.0
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float = 0.0
    multires_noise_iterations: int = 0
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float = 0.0
    ip_noise_gamma_random_strength: bool = False

    @classmethod
    def from_cfg(cls, cfg):
        """The settings of a parsed recipe (options it lacks keep their defaults)."""
        return cls(**{f.name: getattr(cfg, f.name, f.default) for f in dataclasses.fields(cls)})

    @property
    def needs_latents(self):
        """adaptive_noise_scale reads the latents' per-channel means: the noise is made after the encode."""
        return bool(self.noise_offset and self.adaptive_noise_scale)

    @property
    def plain(self):
        """Nothing but the drawn noise (and, maybe, a fixed-strength offset): no extra draws."""
        return not (self.noise_offset_random_strength or self.adaptive_noise_scale or
                    self.multires_noise_iterations or self.ip_noise_gamma)


def timestep_range(cfg, num_train_timesteps):
    """(low, high): training timesteps are drawn uniformly from [low, high) (kohya's min_timestep,
    max_timestep; unset max = the model's num_train_timesteps)."""
    low = getattr(cfg, "min_timestep", 0) or 0
    high = getattr(cfg, "max_timestep", None)
    return int(low), int(num_train_timesteps if high is None else high)


def aux_rng(seed, option):
    """The generator of one option's extra draws ("offset", "pyramid" or "ip") for the sample whose
    ``aux_seed`` is ``seed``."""
    return np.random.default_rng([int(seed), AUX_STREAMS[option]])


def bilinear_resize(x, height, width):
    """``x`` [..., h, w] resized to [..., height, width] as torch's bilinear interpolation with
    align_corners=False (``nn.Upsample(size=..., mode="bilinear")``): output pixel i reads the input at
    ``max((i + 0.5) * h / height - 0.5, 0)``, linearly between its two neighbours (the last one repeated
    at the edge). float64."""
    x = np.asarray(x, dtype=np.float64)

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(src.astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fy = axis(x.shape[-2], int(height))
    c0, c1, fx = axis(x.shape[-1], int(width))
    rows = x[..., r0, :] * (1.0 - fy)[:, None] + x[..., r1, :] * fy[:, None]
    return rows[..., c0] * (1.0 - fx) + rows[..., c1] * fx


def pyramid_noise(noise, rng, iterations, discount):
    """kohya's pyramid_noise_like for ONE sample ``noise`` [C, H, W] (float64 result): level i adds
    ``discount**i`` times N(0, 1) noise of side ``max(1, int(side / r**i))`` (r ~ U(2, 4) drawn per level),
    bilinearly upsampled; the loop stops after the first level with a 1-pixel side; the sum is divided by
    its standard deviation (N - 1, as torch's ``std``)."""
    noise = np.array(noise, dtype=np.float64)
    channels, height, width = noise.shape
    for i in range(int(iterations)):
        r = rng.random() * 2 + 2
        hn, wn = max(1, int(height / r ** i)), max(1, int(width / r ** i))
        level = rng.standard_normal((channels, hn, wn))
        noise += bilinear_resize(level, height, width) * discount ** i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std(ddof=1)


def latent_channel_means(latents):
    """|mean over (h, w)| of each (sample, channel) of ``latents`` [N, C, h, w] (float64 [N, C])."""
    return np.abs(np.asarray(latents, dtype=np.float64).mean(axis=(2, 3)))


def offset_strengths(settings, seeds, latent_abs_mean=None):
    """[N, C] (or [N, 1]) float64 strengths of the offset noise: noise_offset (times U(0, 1) per sample with
    random strength) plus adaptive_noise_scale * |channel mean of the latents|, clamped at 0 (kohya)."""
    n = len(seeds)
    base = np.full((n, 1), float(settings.noise_offset))
    if settings.noise_offset_random_strength:
        base = base * np.array([[aux_rng(s, "offset").random()] for s in seeds])
    if settings.adaptive_noise_scale:
        if latent_abs_mean is None:
            raise ValueError("adaptive_noise_scale needs the latents' channel means")
        base = np.maximum(base + settings.adaptive_noise_scale * np.asarray(latent_abs_mean, np.float64), 0.0)
    return base


def compose_noise(batch, settings, latent_abs_mean=None):
    """The :class:`TrainingNoise` of a host batch (``noise`` [N, C, h, w], ``offset_noise`` [N, C, 1, 1],
    ``aux_seed`` [N] from ldm.data.dataset) under ``settings``; ``latent_abs_mean`` [N, C] (see
    :func:`latent_channel_means`) is needed with adaptive_noise_scale."""
    noise, offset_noise = batch["noise"], np.asarray(batch["offset_noise"], dtype=np.float64)
    if settings.plain:
        if settings.noise_offset:
            noise = noise.astype(np.float64) + float(settings.noise_offset) * offset_noise
        noise = np.asarray(noise, dtype=np.float32)
        return TrainingNoise(noise, noise)
    seeds = [int(s) for s in batch["aux_seed"]]
    noise = np.array(noise, dtype=np.float64)
    if settings.noise_offset:
        strength = offset_strengths(settings, seeds, latent_abs_mean)
        noise = noise + strength[:, :, None, None] * offset_noise
    if settings.multires_noise_iterations:
        noise = np.stack([pyramid_noise(noise[k], aux_rng(s, "pyramid"), settings.multires_noise_iterations,
                                        settings.multires_noise_discount) for k, s in enumerate(seeds)])
    target = noise.astype(np.float32)
    if not settings.ip_noise_gamma:
        return TrainingNoise(target, target)
    perturbed = np.empty_like(noise)
    for k, s in enumerate(seeds):
        rng = aux_rng(s, "ip")
        gamma = settings.ip_noise_gamma * (rng.random() if settings.ip_noise_gamma_random_strength else 1.0)
        perturbed[k] = noise[k] + gamma * rng.standard_normal(noise.shape[1:])
    return TrainingNoise(target, perturbed.astype(np.float32))


def check_objective_options(cfg, model_config):
    """Combinations of the objective options that are undefined for this run's model (the model config
    with the recipe's prediction_type / rescale_zero_snr), one line naming both settings, before anything
    is built (the options' own domains are ldm.train.checks'):

    * an eps model on a zero-terminal-SNR schedule: at t = T-1 the input is pure noise, and x0 =
      (x_t - sqrt(1 - abar) eps) / sqrt(abar) divides by sqrt(abar) = 0 (sampling from such a model is
      undefined; its v_pred_like_loss weight would be infinite too). Zero terminal SNR is for v models;
    * scale_v_pred_loss_like_noise_pred on a non-v model, v_pred_like_loss on a non-eps model (kohya-ss
      refuses them the same way: the first rescales a v loss, the second adds a v-like loss to an eps loss);
    * adaptive_noise_scale or noise_offset_random_strength without noise_offset (kohya refuses the first;
      both would be silently ignored), ip_noise_gamma_random_strength without ip_noise_gamma;
    * min_timestep >= max_timestep, or max_timestep beyond the model's timesteps;
    * a loss weight or Huber threshold that is not a usable float32 at some allowed t (e.g. a huge
      v_pred_like_loss, or a huber_c whose square overflows).

    min-SNR (snr_gamma) and the debiased weights stay finite at SNR 0: the v weights are 0 and 1/(0+1),
    the eps min-SNR weight 0/0 takes its limit 1, and the debiased weights clip SNR to [1e-3, 1000]; so
    they need no refusal (and eps at SNR 0 is refused above anyway)."""
    from ldm.diffusion.spec import resolve_spec
    from ldm.errors import UserError
    from ldm.train.trainer import loss_options, timestep_terms
    spec = resolve_spec(model_config, prediction_type=getattr(cfg, "prediction_type", "") or None,
                        rescale_zero_snr=getattr(cfg, "rescale_zero_snr", None))
    kind = spec.prediction_type
    source = "--prediction_type" if getattr(cfg, "prediction_type", "") else "the model config's prediction_type"
    if spec.rescale_zero_snr and kind == "eps":
        raise UserError(f"prediction_type eps ({source}) with rescale_zero_snr True: at the last timestep the input "
                        "is pure noise (SNR 0) and an eps model's x0 = (x_t - sqrt(1-abar) eps) / sqrt(abar) divides by "
                        "0; train zero terminal SNR with prediction_type v")
    if getattr(cfg, "scale_v_pred_loss_like_noise_pred", False) and kind != "v":
        raise UserError(f"scale_v_pred_loss_like_noise_pred needs prediction_type v, got {kind} ({source}): it "
                        "rescales a v loss (kohya: only with v_parameterization)")
    if getattr(cfg, "v_pred_like_loss", 0.0) and kind != "eps":
        raise UserError(f"v_pred_like_loss needs prediction_type eps, got {kind} ({source}): it adds a v-like loss to "
                        "an eps loss (kohya: not with v_parameterization; use scale_v_pred_loss_like_noise_pred there)")
    settings = NoiseSettings.from_cfg(cfg)
    for name in ("adaptive_noise_scale", "noise_offset_random_strength"):
        if getattr(settings, name) and not settings.noise_offset:
            raise UserError(f"{name} needs noise_offset (it changes the offset's strength; noise_offset is 0)")
    if settings.ip_noise_gamma_random_strength and not settings.ip_noise_gamma:
        raise UserError("ip_noise_gamma_random_strength needs ip_noise_gamma (it scales gamma; ip_noise_gamma is 0)")
    total = spec.num_train_timesteps
    low, high = timestep_range(cfg, total)
    if high > total:
        raise UserError(f"max_timestep {high} is beyond the model's {total} training timesteps (t < {total})")
    if low >= high:
        raise UserError(f"min_timestep {low} must be below max_timestep {high} (timesteps are drawn from "
                        f"[min_timestep, max_timestep))")
    options = loss_options(cfg)
    t = np.arange(low, high)
    with np.errstate(all="ignore"):
        terms = timestep_terms(spec.schedule, t, kind, **options)
        square = terms.huber_c * terms.huber_c
    bad = np.flatnonzero(~np.isfinite(terms.weight))
    if bad.size:
        used = ", ".join(f"{k} {v:g}" for k, v in options.items() if k in ("snr_gamma", "v_pred_like_loss") and v) \
            or "the weights"
        raise UserError(f"{used}: the loss weight at t={t[bad[0]]} is not finite in float32; lower it")
    bad = np.flatnonzero(~((terms.huber_c > 0) & np.isfinite(square)))
    if options["loss_type"] in ("huber", "smooth_l1") and bad.size:
        raise UserError(f"huber_c {options['huber_c']:g} with huber_scale {options['huber_scale']:g} "
                        f"({options['huber_schedule']} schedule): the threshold at t={t[bad[0]]} is "
                        f"{float(terms.huber_c[bad[0]]):g}, not a usable float32 (c > 0 and c^2 finite)")
