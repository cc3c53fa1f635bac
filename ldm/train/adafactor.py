"""Adafactor (Shazeer & Stern 2018), as transformers' ``Adafactor`` computes it (kohya-ss's ``AdaFactor``).

MindSpore's ``nn.AdaFactor`` takes its rate at construction and keeps its own state layout; here, as for the
other optimisers, the rate is an argument of ``construct`` and the state plain Parameters (so resume and the
state-size report work the same way). Per step t, for each parameter (float32):

    beta2_t = 1 - t^decay_rate;  G = g^2 + eps1
    >= 2-D: row <- beta2_t row + (1 - beta2_t) mean_last(G);  col <- beta2_t col + (1 - beta2_t) mean_second_last(G)
            V = (row / mean_last(row)) (outer, over the last two dims) col      (factored: O(rows + cols) state)
    1-D:    V <- beta2_t V + (1 - beta2_t) G
    u = g / sqrt(V);  u <- u / max(1, RMS(u) / clip_threshold)
    rate = max(eps2, RMS(w)) * step_size  (scale_parameter; else step_size)
    step_size = min(1e-6 t if warmup_init else 1e-2, 1/sqrt(t))   (relative_step; else the schedule's lr)
    u <- rate u  (then m <- beta1 m + (1 - beta1) u, u = m, when beta1 is set)
    w <- w - weight_decay rate w - u

As in transformers, the factoring is over the last two dimensions whatever the rank (a 3x3 conv weight
[O, I, 3, 3] keeps [O, I, 3] + [O, I, 3]; a 1x1 conv [O, I, 1, 1] keeps [O, I, 1] twice, more than one full
copy would). With relative_step the rate ignores the schedule and the per-group multipliers (kohya-ss
drops unet_lr / text_encoder_lr then too).
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from ldm.train.optim_args import adafactor_shapes, scale_tensors

_adafactor = ops.MultitypeFuncGraph("adafactor_update")
_adafactor_momentum = ops.MultitypeFuncGraph("adafactor_momentum_update")


def _rms(x):
    return ops.sqrt(ops.mean(x * x))


def _scaled_update(step_size, beta2t, eps1, eps2, clip, scale_parameter, scale, param, grad, row, col):
    """The rate-scaled update of one parameter (updates its second-moment state); returns (update, rate)."""
    g2 = grad * grad + eps1
    if param.ndim >= 2:
        row_new = beta2t * row + (1.0 - beta2t) * ops.mean(g2, -1)
        col_new = beta2t * col + (1.0 - beta2t) * ops.mean(g2, -2)
        ops.assign(row, row_new)
        ops.assign(col, col_new)
        r_factor = ops.expand_dims(ops.rsqrt(row_new / ops.mean(row_new, -1, keep_dims=True)), -1)
        update = r_factor * ops.expand_dims(ops.rsqrt(col_new), -2) * grad
    else:
        v_new = beta2t * row + (1.0 - beta2t) * g2
        ops.assign(row, v_new)
        update = ops.rsqrt(v_new) * grad
    update = update / ops.maximum(_rms(update) / clip, 1.0)
    param_scale = ops.select(scale_parameter, ops.maximum(eps2, _rms(param)), ops.ones_like(eps2))
    rate = step_size * scale * param_scale
    return update * rate, rate


@_adafactor.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                     "Tensor", "Tensor", "Tensor")
def _adafactor_one(step_size, beta2t, eps1, eps2, clip, scale_parameter, weight_decay, scale, param, grad, row, col):
    grad = ops.cast(grad, param.dtype)
    update, rate = _scaled_update(step_size, beta2t, eps1, eps2, clip, scale_parameter, scale, param, grad, row, col)
    ops.assign(param, (param - weight_decay * rate * param) - update)
    return True


@_adafactor_momentum.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                              "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adafactor_momentum_one(step_size, beta2t, eps1, eps2, clip, scale_parameter, weight_decay, beta1, scale, param,
                            grad, row, col, m):
    grad = ops.cast(grad, param.dtype)
    update, rate = _scaled_update(step_size, beta2t, eps1, eps2, clip, scale_parameter, scale, param, grad, row, col)
    m_new = beta1 * m + (1.0 - beta1) * update
    ops.assign(m, m_new)
    ops.assign(param, (param - weight_decay * rate * param) - m_new)
    return True


def _zeros_like_shapes(params, prefix, index):
    return ParameterTuple(Parameter(initializer("zeros", adafactor_shapes(p.shape)[index], ms.float32),
                                    name=f"{prefix}.{p.name}", requires_grad=False) for p in params)


class Adafactor(nn.Cell):
    """Adafactor with factored second moments; ``relative_step`` (default, as transformers) sets its own rate."""

    def __init__(self, params, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=0.0,
                 scale_parameter=True, relative_step=True, warmup_init=False, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        # rows: the row means (>= 2-D) or the whole second moment (1-D); cols: column means or a (1,) placeholder
        self.v_row = _zeros_like_shapes(self.params, "adafactor_vr", 0)
        self.v_col = _zeros_like_shapes(self.params, "adafactor_vc", 1)
        self.exp_avg = self.params.clone(prefix="adafactor_m", init="zeros") if beta1 is not None else None
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.relative_step, self.warmup_init = bool(relative_step), bool(warmup_init)
        self.lr_scales = scale_tensors(self.params, None if self.relative_step else lr_scales)
        self.eps1, self.eps2 = float(eps[0]), float(eps[1])
        self.clip_threshold, self.decay_rate = float(clip_threshold), float(decay_rate)
        self.beta1 = None if beta1 is None else float(beta1)
        self.weight_decay = float(weight_decay)
        self.scale_parameter = bool(scale_parameter)
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        stepf = ops.cast(step, ms.float32)
        if self.relative_step:
            min_step = 1e-6 * stepf if self.warmup_init else Tensor(1e-2, ms.float32)
            step_size = ops.minimum(min_step, ops.rsqrt(stepf))
        else:
            step_size = ops.cast(lr, ms.float32)
        beta2t = 1.0 - ops.pow(stepf, Tensor(self.decay_rate, ms.float32))
        eps1, eps2 = Tensor(self.eps1, ms.float32), Tensor(self.eps2, ms.float32)
        clip, decay = Tensor(self.clip_threshold, ms.float32), Tensor(self.weight_decay, ms.float32)
        scale_parameter = Tensor(self.scale_parameter, ms.bool_)
        if self.beta1 is None:
            self.hyper_map(ops.partial(_adafactor, step_size, beta2t, eps1, eps2, clip, scale_parameter, decay),
                           self.lr_scales, self.params, grads, self.v_row, self.v_col)
        else:
            self.hyper_map(ops.partial(_adafactor_momentum, step_size, beta2t, eps1, eps2, clip, scale_parameter,
                                       decay, Tensor(self.beta1, ms.float32)),
                           self.lr_scales, self.params, grads, self.v_row, self.v_col, self.exp_avg)
        return step
