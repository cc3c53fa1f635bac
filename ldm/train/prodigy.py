"""Prodigy (Mishchenko & Defazio 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"): Adam whose
step size d is estimated from the run itself, as the reference implementation ``prodigyopt`` computes it.

The learning rate given to ``construct`` is a multiplier of d (kohya-ss users set 1.0 and a constant or
cosine schedule). d is global: each step sums two numbers over every parameter, so the update is two
mapped passes with one reduction between them. Per step k (0-based), with dlr = d * lr * bc (bc =
sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) with use_bias_correction, else 1) and d/d0 as prodigyopt uses it:

    g <- g + wd w                                     (only with decouple=False: L2 through the gradient)
    num = beta3 num + sum_params (d/d0) dlr <g, p0 - w>      (p0: the weights at the first step)
    m <- beta1 m + d (1 - beta1) g;   v <- beta2 v + d^2 (1 - beta2) g^2
    s <- beta3 s + (d/d0) (d if safeguard_warmup else dlr) g;   den = sum_params |s|_1
    if den == 0: stop here (no weight update, k unchanged)
    d_hat = d_coef num / den;  d <- max(d, d_hat) while d == d0;  d_max <- max(d_max, d_hat)
    d <- min(d_max, d growth_rate)
    w <- w - dlr wd w (decouple)  - dlr m / (sqrt(v) + d eps)     (dlr from before the d update, as prodigyopt)

``slice_p`` > 1 keeps p0 and s for every slice_p-th element only (prodigyopt's memory saver, an
approximation). prodigyopt refuses parameter groups with different rates; here unet_lr / text_encoder_lr
multiply dlr per parameter everywhere it appears (each group's share of num and s is its own step size).
p0 is stored even for an all-zero parameter (prodigyopt keeps a scalar 0 there; the values are the same).
"""
import math

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from ldm.train.optim_args import scale_tensors, sliced_length

_prodigy_stats = ops.MultitypeFuncGraph("prodigy_stats")
_prodigy_step = ops.MultitypeFuncGraph("prodigy_step")


def _sliced(x, slice_p):
    flat = ops.reshape(x, (-1,))
    if slice_p > 1:
        return flat[::slice_p]
    return flat


@_prodigy_stats.register("Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                         "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _prodigy_stats_one(slice_p, first, d, d_ratio, dlr, safeguard, beta1, beta2, beta3, l2, scale, param, grad, m, v,
                       s, p0):
    """Moments and s of one parameter; returns [its share of num, |s|_1]."""
    grad = ops.cast(grad, param.dtype) + l2 * param
    flat_w = _sliced(param, slice_p)
    p0 = ops.depend(p0, ops.assign(p0, ops.select(first, flat_w, p0)))     # select, not `if`: see _prodigy_step_one
    flat_g = _sliced(grad, slice_p)
    dlr = dlr * scale
    num = d_ratio * dlr * ops.reduce_sum(flat_g * (p0 - flat_w))
    ops.assign(m, beta1 * m + d * (1.0 - beta1) * grad)
    ops.assign(v, beta2 * v + d * d * (1.0 - beta2) * grad * grad)
    s_new = beta3 * s + d_ratio * ops.select(safeguard, d, dlr) * flat_g
    ops.assign(s, s_new)
    return ops.stack([num, ops.reduce_sum(ops.abs(s_new))])


@_prodigy_step.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _prodigy_step_one(go, dlr, d_eps, decay, scale, param, m, v):
    # a select, not `if go:`: a branch on a tensor inside the mapped function became per-parameter control flow
    # in graph mode (tiny SD model, this CPU: first step 93 s instead of 20, then 8 s a step instead of 0.4)
    dlr = dlr * scale
    ops.assign(param, ops.select(go, (param - decay * dlr * param) - dlr * m / (ops.sqrt(v) + d_eps), param))
    return True


def _scalar(value, name):
    return Parameter(Tensor(value, ms.float32), name=name, requires_grad=False)


class Prodigy(nn.Cell):
    """Prodigy; state: m, v (full), s and p0 (sliced), the step and the scalars d, d_max, num."""

    def __init__(self, params, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, decouple=True,
                 use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=math.inf,
                 slice_p=1, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.lr_scales = scale_tensors(self.params, lr_scales)
        self.exp_avg = self.params.clone(prefix="prodigy_m", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="prodigy_v", init="zeros")
        self.slice_p = int(slice_p)
        self.s = self._sliced_state("prodigy_s")
        self.p0 = self._sliced_state("prodigy_p0")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.d = _scalar(d0, "prodigy_d")
        self.d_max = _scalar(d0, "prodigy_d_max")
        self.d_numerator = _scalar(0.0, "prodigy_d_numerator")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.beta3 = math.sqrt(self.beta2) if beta3 is None else float(beta3)
        self.eps, self.d0, self.d_coef, self.growth_rate = float(eps), float(d0), float(d_coef), float(growth_rate)
        self.weight_decay, self.decouple = float(weight_decay), bool(decouple)
        self.use_bias_correction, self.safeguard_warmup = bool(use_bias_correction), bool(safeguard_warmup)
        self.hyper_map = ops.HyperMap()

    def _sliced_state(self, prefix):
        return ParameterTuple(Parameter(initializer("zeros", (sliced_length(p.shape, self.slice_p),), ms.float32),
                                        name=f"{prefix}.{p.name}", requires_grad=False) for p in self.params)

    def construct(self, grads, lr):
        lr = ops.cast(lr, ms.float32)
        k = self.step
        d, d_max = self.d * 1.0, self.d_max * 1.0        # values of this step (the Parameters change below)
        beta1, beta2 = Tensor(self.beta1, ms.float32), Tensor(self.beta2, ms.float32)
        if self.use_bias_correction:
            kf = ops.cast(k + 1, ms.float32)
            dlr = d * lr * (ops.sqrt(1.0 - ops.pow(beta2, kf)) / (1.0 - ops.pow(beta1, kf)))
        else:
            dlr = d * lr
        d0 = Tensor(self.d0, ms.float32)
        l2 = Tensor(0.0 if self.decouple else self.weight_decay, ms.float32)
        beta3 = Tensor(self.beta3, ms.float32)
        stats = self.hyper_map(ops.partial(_prodigy_stats, self.slice_p, k == 0, d, d / d0, dlr,
                                           Tensor(self.safeguard_warmup, ms.bool_), beta1, beta2, beta3, l2),
                               self.lr_scales, self.params, grads, self.exp_avg, self.exp_avg_sq, self.s, self.p0)
        total = ops.addn(stats)
        numerator, denominator = beta3 * self.d_numerator + total[0], total[1]
        go = denominator > 0
        d_hat = Tensor(self.d_coef, ms.float32) * numerator / ops.select(go, denominator, ops.ones_like(denominator))
        d_new = ops.select(d == d0, ops.maximum(d, d_hat), d)
        d_max_new = ops.maximum(d_max, d_hat)
        d_new = ops.minimum(d_max_new, d_new * Tensor(self.growth_rate, ms.float32))
        estimate = ops.logical_and(go, lr > 0)
        ops.assign(self.d, ops.select(estimate, d_new, d))
        ops.assign(self.d_max, ops.select(estimate, d_max_new, d_max))
        ops.assign(self.d_numerator, ops.select(go, numerator, self.d_numerator))
        decay = Tensor(self.weight_decay if self.decouple else 0.0, ms.float32)
        self.hyper_map(ops.partial(_prodigy_step, go, dlr, self.d * Tensor(self.eps, ms.float32), decay),
                       self.lr_scales, self.params, self.exp_avg, self.exp_avg_sq)
        step = k + ops.cast(go, ms.int32)
        ops.assign(self.step, step)
        return step
