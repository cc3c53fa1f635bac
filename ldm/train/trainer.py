"""The training step: diffusion objective (target + min-SNR weighting side by side) and the compiled
forward/backward/update around it.

Per-sample quantities that depend only on the timestep (abar_t, the loss weight, the Huber threshold)
are looked up on the host in the model's float64 schedule and passed in as [N] tensors, so the graph
holds no schedule tables; the noising is the schedule's own ``add_noise_at`` and the target
``ldm.diffusion.prediction.get_target`` (the one copy of the eps/v algebra). The loss types and weights
are kohya-ss's (``--loss_type``, ``--huber_schedule``, ``--huber_c``, ``--huber_scale``, ``--min_snr_gamma``
(our ``snr_gamma``), ``--debiased_estimation_loss``, ``--scale_v_pred_loss_like_noise_pred``,
``--v_pred_like_loss``): elementwise loss, mean over (C, H, W), times the product of the weights.
"""
import inspect
import typing

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ldm.diffusion.prediction import (debiased_weight, get_target, min_snr_weight, normalize_prediction_type,
                                      v_as_noise_weight, v_like_loss_weight)
from ldm.diffusion.schedule import add_noise_at


_accumulate_one = ops.MultitypeFuncGraph("accumulate_one")


@_accumulate_one.register("Number", "Tensor", "Tensor")
def _accumulate(scale, acc, grad):
    ops.assign_add(acc, grad.astype(acc.dtype) * scale)
    return True


_zero_one = ops.MultitypeFuncGraph("zero_one")


@_zero_one.register("Tensor")
def _zero(acc):
    ops.assign(acc, ops.zeros_like(acc))
    return True


LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")


class ObjectiveInputs(typing.NamedTuple):
    """What one training micro-batch feeds the objective (all [N, ...] Tensors); passed positionally
    (``*inputs``) into the compiled step functions. ``weight`` stays last (callers replace it)."""
    latents: object            # x0: scaled VAE latents (N, C, h, w)
    cond: object               # text context (N, 77, D), or token ids (N, 77) when the text encoder trains
    t: object                  # int timesteps (N,)
    noise: object              # eps of the target (N, C, h, w), offset / pyramid noise included
    input_noise: object        # eps x_t is made of: ``noise`` plus kohya's input perturbation (ip_noise_gamma)
    alphas_cumprod: object     # abar_t (N,) from the model's schedule
    huber_c: object            # Huber threshold c_t (N,) (huber / smooth_l1; ones otherwise, unused)
    weight: object             # per-sample loss weight (N,) (min-SNR-gamma, debiased, v-pred options, or ones)


def elementwise_loss(loss_type, error, huber_c):
    """kohya-ss's conditional_loss without reduction, of ``error`` = prediction - target (N, C, h, w):
    l2 d^2; l1 |d|; huber 2c (sqrt(d^2 + c^2) - c); smooth_l1 2 (sqrt(d^2 + c^2) - c), with c = ``huber_c``
    (N,) per sample. sqrt(d^2 + c^2) - c is computed as d^2 / (sqrt(d^2 + c^2) + c): the same number
    without float32's cancellation when c is much larger than |d|."""
    if loss_type == "l1":
        return ops.abs(error)
    if loss_type in ("huber", "smooth_l1"):
        c = huber_c.reshape((-1, 1, 1, 1))
        square = ops.square(error)
        excess = 2.0 * square / (ops.sqrt(square + c * c) + c)
        return excess * c if loss_type == "huber" else excess
    return ops.square(error)


class DiffusionObjective(nn.Cell):
    """loss = mean_n w_n * mean_chw loss(model(x_t, t, c) - target) with x_t = sqrt(abar) x0 + sqrt(1-abar)
    input_noise and the target made of ``noise`` (see :func:`elementwise_loss` for ``loss_type``).
    Returns (loss, per-sample weighted losses (N,)): the second output is not differentiated; the loop
    uses it for the loss by timestep bin.

    ``cond``: the text context (N, 77, D) when the text encoder is frozen, else token ids (N, 77)
    that are encoded here so the text encoder (or its LoRA) gets gradients. ``extra``: the step's extra input, read
    by :meth:`denoise` (inpainting models, ldm.train.inpaint: (N, 1 + C, h, w) appended to x_t's channels, the UNet
    input [x_t, mask, masked latents]; ControlNet training, ldm.train.controlnet, replaces :meth:`denoise`).
    """

    def __init__(self, model, prediction_type, encode_text=False, loss_type="l2"):
        super().__init__(auto_prefix=False)
        self.model = model
        self.prediction_type = normalize_prediction_type(prediction_type)
        self.encode_text = encode_text
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
        self.loss_type = loss_type

    def construct(self, latents, cond, t, noise, input_noise, abar, huber_c, weight, extra=None):
        x_t = add_noise_at(latents, input_noise, abar)
        target = get_target(self.prediction_type, latents, noise, abar)
        context = self.model.get_learned_conditioning(cond) if self.encode_text else cond
        out = self.denoise(x_t, t, context, extra)
        loss = elementwise_loss(self.loss_type, out.astype(ms.float32) - target, huber_c)
        per_sample = loss.mean(axis=(1, 2, 3)) * weight
        return per_sample.mean(), ops.stop_gradient(per_sample)

    def denoise(self, x_t, t, context, extra=None):
        """The model output (eps or v) at x_t; ``extra`` (an inpainting model's) joins x_t's channels."""
        if extra is not None:
            x_t = ops.cat((x_t, extra), 1)
        return self.model.apply_model(x_t, t, context)


class TimestepTerms(typing.NamedTuple):
    """Host-side [N] float32 arrays of the objective that depend on t alone."""
    alphas_cumprod: np.ndarray
    weight: np.ndarray
    huber_c: np.ndarray


def huber_threshold(schedule, t, huber_schedule="snr", huber_c=0.1, huber_scale=1.0):
    """kohya-ss's get_huber_threshold_if_needed, float64 [N]: constant c * scale; exponential
    scale * exp(ln(c) t / T) = scale * c^(t/T); snr (1 - c) / (1 + sigma_t)^2 + c with sigma_t =
    sqrt((1 - abar_t) / abar_t) (huber_scale unused there, as in kohya; zero SNR: sigma = inf, c_t = c)."""
    t = np.asarray(t, dtype=np.int64)
    if huber_schedule == "constant":
        return np.full(t.shape, float(huber_c) * float(huber_scale))
    if huber_schedule == "exponential":
        return np.exp(np.log(float(huber_c)) * t / schedule.num_train_timesteps) * float(huber_scale)
    if huber_schedule == "snr":
        with np.errstate(divide="ignore"):
            sigmas = np.sqrt((1.0 - schedule.alphas_cumprod[t]) / schedule.alphas_cumprod[t])
        return (1.0 - huber_c) / (1.0 + sigmas) ** 2 + huber_c
    raise ValueError(f"unknown huber_schedule {huber_schedule!r}; use one of {', '.join(HUBER_SCHEDULES)}")


def timestep_terms(schedule, t, prediction_type, snr_gamma=0.0, debiased=False, scale_v_pred_loss_like_noise_pred=False,
                   v_pred_like_loss=0.0, loss_type="l2", huber_schedule="snr", huber_c=0.1, huber_scale=1.0):
    """:class:`TimestepTerms` of timesteps ``t``: abar_t; the loss weight, the product (kohya-ss applies them one
    after another) of min-SNR-gamma, the debiased-estimation weight, scale_v_pred_loss_like_noise_pred (v) and
    v_pred_like_loss (eps); the Huber threshold of ``huber_schedule`` (ones unless loss_type is huber or
    smooth_l1). Computed in float64, returned as float32."""
    t = np.asarray(t, dtype=np.int64)
    kind = normalize_prediction_type(prediction_type)
    abar = schedule.alphas_cumprod[t]
    snr = np.asarray(schedule.snr[t], dtype=np.float64)
    weight = np.ones_like(abar)
    if snr_gamma and snr_gamma > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = min_snr_weight(snr, snr_gamma, kind)
        # zero-terminal-SNR schedules have snr = 0 at t = T-1: eps weight is then 0/0 -> use 1 (the limit)
        weight = np.where(np.isfinite(weight), weight, 1.0)
    if scale_v_pred_loss_like_noise_pred:
        if kind != "v":
            raise ValueError("scale_v_pred_loss_like_noise_pred needs a v model")
        weight = weight * v_as_noise_weight(snr)
    if v_pred_like_loss:
        if kind != "eps":
            raise ValueError("v_pred_like_loss needs an eps model")
        with np.errstate(divide="ignore"):
            weight = weight * v_like_loss_weight(snr, float(v_pred_like_loss))
    if debiased:
        weight = weight * debiased_weight(snr, kind)
    huber = (huber_threshold(schedule, t, huber_schedule, huber_c, huber_scale)
             if loss_type in ("huber", "smooth_l1") else np.ones_like(abar))
    return TimestepTerms(np.asarray(abar, dtype=np.float32), np.asarray(weight, dtype=np.float32),
                         np.asarray(huber, dtype=np.float32))


LOSS_OPTIONS = ("snr_gamma", "scale_v_pred_loss_like_noise_pred", "v_pred_like_loss", "loss_type", "huber_schedule",
                "huber_c", "huber_scale")


_TERM_DEFAULTS = {k: p.default for k, p in inspect.signature(timestep_terms).parameters.items()}


def loss_options(cfg):
    """The keyword arguments of :func:`timestep_terms` a parsed recipe sets (defaults where it lacks one)."""
    options = {name: getattr(cfg, name, _TERM_DEFAULTS[name]) for name in LOSS_OPTIONS}
    options["debiased"] = bool(getattr(cfg, "debiased_estimation_loss", False))
    return options


def _hw_dynamic(tensor):
    """A placeholder of ``tensor``'s shape and dtype whose height and width (axes 2, 3 of a 4-D tensor)
    are dynamic."""
    shape = list(tensor.shape)
    if len(shape) == 4:
        shape[2] = shape[3] = None
    return Tensor(shape=shape, dtype=tensor.dtype)


class CompiledForEverySize(nn.Cell):
    """``fn`` compiled once for every image size: at the first call every 4-D input's height and width
    are declared dynamic (``Cell.set_inputs``), so a new aspect-ratio bucket runs the same graph instead
    of compiling its own (tiny model, 7 buckets: one 8.5 s compile instead of 7.8 s per bucket, steps
    as fast). Only for models whose traced graph does not depend on the size (attention on one fixed
    path: see ldm.train.loop.size_free_attention)."""

    def __init__(self, fn):
        super().__init__(auto_prefix=False)
        object.__setattr__(self, "_fn", fn)      # a method of the TrainStep that holds this cell: no child link
        self._declared = False

    @ms.jit
    def construct(self, *args):
        return self._fn(*args)

    def __call__(self, *args):
        if not self._declared:
            self.set_inputs(*[_hw_dynamic(a) for a in args])
            self._declared = True
        return super().__call__(*args)


class TrainStep(nn.Cell):
    """Compiled step functions over a model, its trainable parameters and the update machinery.

    A Cell (without name prefixes) whose bound methods are compiled, so MindSpore finds the parameters
    through the Cell: a compiled closure over them also runs, but MindSpore 2.8's compile cache binds
    a cached closure's parameters wrongly (its loaded training step gave a NaN loss, the updates went
    nowhere); through a Cell the cached step gives the same losses as a compiled one
    (tests/test_compile_cache.py).

    ``encode(images, tokens, vae_noise) -> (latents, cond)`` runs the frozen encoders (no gradients);
    ``step(*ObjectiveInputs, lr) -> (loss, per_sample, overflow)`` does forward, backward, the
    gradient all-reduce (data parallel), unscale/overflow check, clipping, the optimiser update and EMA.
    With gradient accumulation, ``accumulate(...) -> (loss, per_sample)`` adds a micro-batch's gradients
    and ``apply(lr)`` performs the update with their mean. ``evaluate(*ObjectiveInputs) -> (loss,
    per_sample)`` is the forward alone (validation loss). An objective that returns only the loss gets
    that loss as its per-sample output. ``every_size``: compile the image-size-dependent functions once
    for all sizes (:class:`CompiledForEverySize`) instead of once per size.
    """

    def __init__(self, model, objective, params, optimizer, ema=None, reducer=None, loss_scaler=None,
                 clip_grad=False, max_grad_norm=1.0, drop_overflow_update=True, accumulation_steps=1,
                 use_cached_latents=False, jit=True, every_size=False):
        super().__init__(auto_prefix=False)
        self.model = model
        self.objective = objective
        self.params = ms.ParameterTuple(params)
        self.optimizer = optimizer
        self.ema = ema
        self.reducer = reducer
        self.scaler = loss_scaler
        self.clip_grad = clip_grad
        self.max_grad_norm = float(max_grad_norm)
        self.drop_overflow_update = drop_overflow_update
        self.accumulation_steps = int(accumulation_steps)
        self.accum = self.params.clone(prefix="accum_grad", init="zeros") if self.accumulation_steps > 1 else None
        self.hyper_map = ops.HyperMap()
        self.grad_fn = ms.value_and_grad(self._scaled_loss, None, self.params, has_aux=True)
        wrap = ms.jit if jit else (lambda f: f)
        sized = CompiledForEverySize if (jit and every_size) else wrap
        compiled = dict(encode=sized(self._encode_cached if use_cached_latents else self._encode),
                        step=sized(self._step), accumulate=sized(self._accumulate),
                        apply=wrap(self._apply_accumulated), evaluate=sized(self._losses))
        compiled["encode_images"] = sized(self._encode) if use_cached_latents else compiled["encode"]  # validation
        for name, fn in compiled.items():
            object.__setattr__(self, name, fn)   # plain attributes: an every-size cell calls back into this one

    # ---- frozen encoders
    def _encode(self, images, tokens, vae_noise):
        mean, logvar = self.model.encode_first_stage(images)
        latents = ops.stop_gradient(self.model.get_first_stage_encoding(mean, logvar, vae_noise))
        cond = tokens if self.objective.encode_text else ops.stop_gradient(
            self.model.get_learned_conditioning(tokens))
        return latents, cond

    def _encode_cached(self, mean, logvar, cond, vae_noise):
        latents = ops.stop_gradient(self.model.get_first_stage_encoding(mean, logvar, vae_noise))
        return latents, cond

    # ---- loss and gradients
    def _losses(self, *inputs):
        out = self.objective(*inputs)
        if isinstance(out, tuple):
            return out[0], out[1]
        return out, ops.stop_gradient(out)

    def _scaled_loss(self, *inputs):
        loss, per_sample = self._losses(*inputs)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        return loss, per_sample

    def _loss_and_grads(self, *inputs):
        (loss, per_sample), grads = self.grad_fn(*inputs)
        if self.scaler is not None:
            loss = self.scaler.unscale(loss)
        return loss, per_sample, grads

    def _update(self, grads, lr):
        """All-reduce (mean), unscale, overflow check, clip, optimiser step, EMA. Returns overflow flag."""
        if self.reducer is not None:
            grads = self.reducer(grads)
        finite = Tensor(True, ms.bool_)
        if self.scaler is not None:
            grads = self.scaler.unscale(grads)
            finite = ms.amp.all_finite(grads)
            self.scaler.adjust(finite)
        if self.clip_grad:
            grads = ops.clip_by_global_norm(grads, self.max_grad_norm)
        if self.scaler is not None and self.drop_overflow_update:
            if finite:
                self.optimizer(grads, lr)
                if self.ema is not None:
                    self.ema.update()
        else:
            self.optimizer(grads, lr)
            if self.ema is not None:
                self.ema.update()
        return ops.logical_not(finite)

    def _step(self, *inputs_and_lr):
        """(*ObjectiveInputs, lr) -> (loss, per_sample, overflow)."""
        loss, per_sample, grads = self._loss_and_grads(*inputs_and_lr[:-1])
        overflow = self._update(grads, inputs_and_lr[-1])
        return loss, per_sample, overflow

    def _accumulate(self, *inputs):
        loss, per_sample, grads = self._loss_and_grads(*inputs)
        self.hyper_map(ops.partial(_accumulate_one, 1.0 / self.accumulation_steps), self.accum, grads)
        return loss, per_sample

    def _apply_accumulated(self, lr):
        overflow = self._update(self.accum, lr)
        self.hyper_map(_zero_one, self.accum)
        return overflow
