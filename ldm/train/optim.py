"""Optimisers written as small Cells whose state is plain Parameters (easy to checkpoint and resume).

``AdamW`` follows PyTorch's ``torch.optim.AdamW`` (bias-corrected moments, decoupled weight decay), so
step-for-step comparisons with diffusers training scripts hold. ``adam`` is the same with L2 decay
added to the gradient, ``momentum``/``sgd`` are heavy-ball SGD. The learning rate is an argument of
``construct`` (a scalar tensor per step), which keeps the LR schedule outside the compiled graph; each
optimiser multiplies it by a fixed per-parameter factor (``lr_scales``: kohya-ss's ``unet_lr`` and
``text_encoder_lr`` as multiples of ``start_learning_rate``, ldm.train.optim_args.group_lr_scales), which is
what PyTorch's per-group rates do, without a second schedule. kohya-ss's optimisers (lion, lamb, adafactor,
prodigy) live in ldm.train.optim_extra, ldm.train.adafactor and ldm.train.prodigy.
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ldm.errors import UserError
from ldm.train.adafactor import Adafactor
from ldm.train.optim_args import describe, group_lr_scales, notices, optimizer_settings, scale_tensors
from ldm.train.optim_extra import Lamb, Lion
from ldm.train.prodigy import Prodigy

# Per-parameter updates are mapped with HyperMap (one graph node for all parameters) instead of a
# Python loop, which graph mode would unroll into one call per parameter (call-depth limit, slow compile).
_adam_update = ops.MultitypeFuncGraph("adam_update")
_momentum_update = ops.MultitypeFuncGraph("momentum_update")


@_adam_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adam_one(fused_op, lr, beta1, beta2, eps, decay, l2, scale, param, grad, m, v):
    grad = ops.cast(grad, param.dtype)
    if l2 > 0:  # "adam": L2 penalty through the gradient instead of decoupled decay
        grad = grad + l2 * param
    fused_op(param, m, v, lr * scale, beta1, beta2, eps, decay, grad)
    return True


@_momentum_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _momentum_one(momentum, weight_decay, lr, scale, param, grad, m):
    grad = ops.cast(grad, ms.float32) + weight_decay * param
    m_new = momentum * m + grad
    ops.assign(m, m_new)
    ops.assign(param, param - (lr * scale) * m_new)
    return True


class AdamW(nn.Cell):
    """Adam with bias correction; ``decoupled=True`` is AdamW (decay applied to weights, not grads).

    Each parameter is updated by one fused ``AdamWeightDecay`` kernel (on CPU a Python-level chain of
    ~15 element-wise ops per parameter cost 8x the UNet's own forward+backward). That kernel has no
    bias correction, so it is folded into its scalar inputs, which gives PyTorch's update exactly:
    with c1 = 1 - beta1^t, c2 = 1 - beta2^t,
        w - lr/c1 * m / (sqrt(v/c2) + eps) - lr*wd*w
      = w - lr' * (m / (sqrt(v) + eps') + wd' * w),   lr' = lr*sqrt(c2)/c1, eps' = eps*sqrt(c2), wd' = wd*c1/sqrt(c2).
    """

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decoupled=True, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.lr_scales = scale_tensors(self.params, lr_scales)
        self.exp_avg = self.params.clone(prefix="adam_m", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="adam_v", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.beta1 = float(betas[0])
        self.beta2 = float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = decoupled
        self.fused_op = ops.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        stepf = ops.cast(step, ms.float32)
        beta1, beta2 = Tensor(self.beta1, ms.float32), Tensor(self.beta2, ms.float32)
        bias1 = 1.0 - ops.pow(beta1, stepf)
        sqrt_bias2 = ops.sqrt(1.0 - ops.pow(beta2, stepf))
        lr = ops.cast(lr, ms.float32)
        wd = Tensor(self.weight_decay if self.decoupled else 0.0, ms.float32)
        l2 = Tensor(0.0 if self.decoupled else self.weight_decay, ms.float32)
        self.hyper_map(ops.partial(_adam_update, self.fused_op, lr * sqrt_bias2 / bias1, beta1, beta2,
                                   Tensor(self.eps, ms.float32) * sqrt_bias2, wd * bias1 / sqrt_bias2, l2),
                       self.lr_scales, self.params, grads, self.exp_avg, self.exp_avg_sq)
        return step


class Momentum(nn.Cell):
    """SGD with heavy-ball momentum (``momentum=0`` is plain SGD) and L2 weight decay."""

    def __init__(self, params, momentum=0.9, weight_decay=0.0, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.lr_scales = scale_tensors(self.params, lr_scales)
        self.moments = self.params.clone(prefix="moments", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        self.hyper_map(ops.partial(_momentum_update, Tensor(self.momentum, ms.float32),
                                   Tensor(self.weight_decay, ms.float32), lr),
                       self.lr_scales, self.params, grads, self.moments)
        return step


def backward_order(params):
    """The trainable parameters in the order the backward pass produces their gradients (last layer first).

    The optimiser updates parameters in list order (its in-place updates are chained), and a gradient's
    memory is freed once its parameter is updated. In forward order the first update needs the first
    layer's gradient, the last one backward makes, so every gradient is alive at once (3.5 GB for the SD
    2.x UNet); in backward order each update runs as soon as its gradient exists. Measured (SD 2.x UNet,
    256 px, batch 1, AdamW, fp32, this 2-core CPU, 2026-12-06): peak 16.5 GB -> 14.0 GB, same step time;
    diffusers-PyTorch 14.4 GB. Clipping and overflow checks need every gradient first, so they keep them.
    Names (and so checkpoints and resume files) do not depend on the order.
    """
    return list(params)[::-1]


def build_optimizer(name, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, options=None, lr_scales=None):
    """``name``: adamw | adam | momentum | sgd (MindONE's ``optim`` key) | lion | lamb | adafactor | prodigy
    (kohya-ss's). ``betas``/``eps``/``weight_decay``: the recipe's, for the optimisers that take them;
    ``options``: kohya-ss's ``optimizer_args`` (they win); ``lr_scales``: per-parameter lr multipliers."""
    params = list(params)
    if not params:
        raise UserError("nothing to train: no parameter requires a gradient")
    settings = optimizer_settings(name, betas, eps, weight_decay, options or {})
    if name in ("adamw", "adam"):
        return AdamW(params, decoupled=name == "adamw", lr_scales=lr_scales, **settings)
    if name == "sgd":
        return Momentum(params, 0.0, lr_scales=lr_scales, **settings)
    cls = dict(momentum=Momentum, lion=Lion, lamb=Lamb, adafactor=Adafactor, prodigy=Prodigy)[name]
    return cls(params, lr_scales=lr_scales, **settings)


def state_nbytes(optimizer, trained):
    """Bytes the optimiser's own Parameters hold (its state; ``trained`` are not counted)."""
    skip = {id(p) for p in trained}
    return sum(int(p.size) * p.itemsize for p in optimizer.get_parameters() if id(p) not in skip)


def optimizer_for_run(cfg, trainable, model, log=None):
    """The run's optimiser: ``cfg.optim`` with its ``optimizer_args``, the recipe's betas / adam_eps /
    weight_decay, and kohya-ss's per-group rates (``unet_lr`` for every trained parameter outside the text
    encoder, ``text_encoder_lr`` inside it). With ``log``, one INFO line of its settings and state size
    (the memory it adds to the weights and gradients) and a warning per setting that has no effect."""
    text_encoder = getattr(model, "cond_stage_model", None)
    te_params = list(text_encoder.get_parameters()) if text_encoder is not None else []
    scales = group_lr_scales(trainable, te_params, cfg.start_learning_rate, cfg.unet_lr, cfg.text_encoder_lr)
    optimizer = build_optimizer(cfg.optim, trainable, cfg.betas, cfg.adam_eps, cfg.weight_decay,
                                cfg.optimizer_args, scales)
    if log is not None:
        settings = optimizer_settings(cfg.optim, cfg.betas, cfg.adam_eps, cfg.weight_decay, cfg.optimizer_args)
        count = sum(int(p.size) for p in trainable)
        nbytes = state_nbytes(optimizer, trainable)
        log.info("optimizer %s: state %.2f bytes per trainable parameter (%.1f MiB); %s", cfg.optim,
                 nbytes / max(count, 1), nbytes / 2 ** 20, describe(settings))
        if len(set(scales)) > 1 or scales[0] != 1.0:
            te_ids = {id(p) for p in te_params}
            peaks = {("text encoder" if id(p) in te_ids else "UNet"): s * cfg.start_learning_rate
                     for p, s in zip(trainable, scales)}
            log.info("learning rates: %s (peaks; the schedule scales each)",
                     ", ".join(f"{k} {v:g}" for k, v in sorted(peaks.items())))
        trains_te = any(id(p) in {id(q) for q in te_params} for p in trainable)
        for line in notices(cfg.optim, settings, cfg, trains_te):
            log.warning(line)
    return optimizer
