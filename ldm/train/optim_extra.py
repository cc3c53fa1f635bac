"""Lion and LAMB, two of the optimisers kohya-ss's scripts offer, as Cells like ldm.train.optim's: state in
plain Parameters (resume restores it bit for bit), ``construct(grads, lr)`` with the scheduled rate as a
scalar tensor, one fixed lr multiplier per parameter (``lr_scales``: unet_lr / text_encoder_lr).

- ``Lion`` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; lion-pytorch's update):
  w <- w (1 - lr wd) - lr sign(beta1 m + (1 - beta1) g);  m <- beta2 m + (1 - beta2) g.
  One moment (4 bytes per parameter), half of AdamW's state; the paper pairs it with a 3-10x smaller
  rate and a 3-10x larger weight decay than AdamW, and betas (0.9, 0.99).
- ``Lamb`` (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2 with phi = identity):
  Adam's bias-corrected moments, u = m_hat / (sqrt(v_hat) + eps) + wd w, then each parameter tensor moves
  by lr * (||w|| / ||u||) * u (trust ratio 1 when either norm is 0): a per-layer step size.
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ldm.train.optim_args import scale_tensors

_lion_update = ops.MultitypeFuncGraph("lion_update")
_lamb_update = ops.MultitypeFuncGraph("lamb_update")


@_lion_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _lion_one(lr, beta1, beta2, weight_decay, scale, param, grad, m):
    grad = ops.cast(grad, param.dtype)
    lr = lr * scale
    update = ops.sign(beta1 * m + (1.0 - beta1) * grad)
    ops.assign(param, param * (1.0 - lr * weight_decay) - lr * update)
    ops.assign(m, beta2 * m + (1.0 - beta2) * grad)
    return True


def _norm(x):
    return ops.sqrt(ops.reduce_sum(x * x))


@_lamb_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor")
def _lamb_one(lr, beta1, beta2, eps, weight_decay, bias1, bias2, scale, param, grad, m, v):
    grad = ops.cast(grad, param.dtype)
    m_new = beta1 * m + (1.0 - beta1) * grad
    v_new = beta2 * v + (1.0 - beta2) * grad * grad
    ops.assign(m, m_new)
    ops.assign(v, v_new)
    update = (m_new / bias1) / (ops.sqrt(v_new / bias2) + eps) + weight_decay * param
    w_norm, u_norm = _norm(param), _norm(update)
    both = ops.logical_and(w_norm > 0, u_norm > 0)
    trust = ops.select(both, w_norm / ops.select(both, u_norm, ops.ones_like(u_norm)), ops.ones_like(u_norm))
    ops.assign(param, param - (lr * scale * trust) * update)
    return True


class Lion(nn.Cell):
    """Lion: the sign of an interpolated momentum as the step, decoupled weight decay."""

    def __init__(self, params, betas=(0.9, 0.99), weight_decay=0.0, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.lr_scales = scale_tensors(self.params, lr_scales)
        self.exp_avg = self.params.clone(prefix="lion_m", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.weight_decay = float(weight_decay)
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        self.hyper_map(ops.partial(_lion_update, ops.cast(lr, ms.float32), Tensor(self.beta1, ms.float32),
                                   Tensor(self.beta2, ms.float32), Tensor(self.weight_decay, ms.float32)),
                       self.lr_scales, self.params, grads, self.exp_avg)
        return step


class Lamb(nn.Cell):
    """LAMB: Adam's direction (plus weight decay) scaled per parameter tensor by the trust ratio."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, lr_scales=None):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.lr_scales = scale_tensors(self.params, lr_scales)
        self.exp_avg = self.params.clone(prefix="lamb_m", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="lamb_v", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer_step", requires_grad=False)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        stepf = ops.cast(step, ms.float32)
        beta1, beta2 = Tensor(self.beta1, ms.float32), Tensor(self.beta2, ms.float32)
        bias1, bias2 = 1.0 - ops.pow(beta1, stepf), 1.0 - ops.pow(beta2, stepf)
        self.hyper_map(ops.partial(_lamb_update, ops.cast(lr, ms.float32), beta1, beta2, Tensor(self.eps, ms.float32),
                                   Tensor(self.weight_decay, ms.float32), bias1, bias2),
                       self.lr_scales, self.params, grads, self.exp_avg, self.exp_avg_sq)
        return step
