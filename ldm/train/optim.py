"""Optimisers written as small Cells whose state is plain Parameters (easy to checkpoint and resume).

``AdamW`` follows PyTorch's ``torch.optim.AdamW`` (bias-corrected moments, decoupled weight decay), so
step-for-step comparisons with diffusers training scripts hold. ``adam`` is the same with L2 decay
added to the gradient, ``momentum``/``sgd`` are heavy-ball SGD. The learning rate is an argument of
``construct`` (a scalar tensor per step), which keeps the LR schedule outside the compiled graph.
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ldm.errors import UserError


class AdamW(nn.Cell):
    """Adam with bias correction; ``decoupled=True`` is AdamW (decay applied to weights, not grads)."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decoupled=True):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.exp_avg = self.params.clone(prefix="adam_m", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="adam_v", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.beta1 = float(betas[0])
        self.beta2 = float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = decoupled

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        stepf = ops.cast(step, ms.float32)
        bias1 = 1.0 - ops.pow(Tensor(self.beta1, ms.float32), stepf)
        bias2 = 1.0 - ops.pow(Tensor(self.beta2, ms.float32), stepf)
        for param, grad, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            grad = ops.cast(grad, ms.float32)
            if self.weight_decay > 0.0:
                if self.decoupled:
                    ops.assign(param, param * (1.0 - lr * self.weight_decay))
                else:
                    grad = grad + self.weight_decay * param
            m_new = self.beta1 * m + (1.0 - self.beta1) * grad
            v_new = self.beta2 * v + (1.0 - self.beta2) * grad * grad
            ops.assign(m, m_new)
            ops.assign(v, v_new)
            denom = ops.sqrt(v_new / bias2) + self.eps
            ops.assign(param, param - (lr / bias1) * m_new / denom)
        return step


class Momentum(nn.Cell):
    """SGD with heavy-ball momentum (``momentum=0`` is plain SGD) and L2 weight decay."""

    def __init__(self, params, momentum=0.9, weight_decay=0.0):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.moments = self.params.clone(prefix="moments", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        for param, grad, m in zip(self.params, grads, self.moments):
            grad = ops.cast(grad, ms.float32)
            if self.weight_decay > 0.0:
                grad = grad + self.weight_decay * param
            m_new = self.momentum * m + grad
            ops.assign(m, m_new)
            ops.assign(param, param - lr * m_new)
        return step


def build_optimizer(name, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """``name``: adamw | adam | momentum | sgd (MindONE's ``optim`` key)."""
    params = list(params)
    if not params:
        raise UserError("nothing to train: no parameter requires a gradient")
    if name == "adamw":
        return AdamW(params, betas, eps, weight_decay, decoupled=True)
    if name == "adam":
        return AdamW(params, betas, eps, weight_decay, decoupled=False)
    if name == "momentum":
        return Momentum(params, betas[0], weight_decay)
    if name == "sgd":
        return Momentum(params, 0.0, weight_decay)
    raise UserError(f"unknown optim {name!r}; choose adamw, adam, momentum or sgd")
