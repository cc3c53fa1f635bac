"""Exponential moving average of trained weights, with a context manager that swaps them in.

    ema = EMA(trainable_params, decay=0.9999)
    ema.update()                      # after each optimiser step (compiled with the step or not)
    with ema.swapped():               # inside: the model holds the EMA weights (sampling, saving)
        save(...)

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` (n = updates so far), as in LDM/MindONE,
so early EMA weights are not dominated by the random/pretrained start.
"""
import contextlib

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_one(decay, shadow, param):
    ops.assign(shadow, shadow - (1.0 - decay) * (shadow - param))
    return True


class EMA(nn.Cell):
    def __init__(self, params, decay=0.9999):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(params)
        self.shadow = self.params.clone(prefix="ema", init="same")
        self.decay = float(decay)
        self.hyper_map = ops.HyperMap()
        self.num_updates = Parameter(Tensor(0, ms.int32), name="ema_num_updates", requires_grad=False)

    def construct(self):
        return self.update()

    def update(self):
        n = self.num_updates + 1
        ops.assign(self.num_updates, n)
        nf = ops.cast(n, ms.float32)
        decay = ops.minimum(Tensor(self.decay, ms.float32), (1.0 + nf) / (10.0 + nf))
        self.hyper_map(ops.partial(_ema_update, decay), self.shadow, self.params)
        return decay

    def _swap(self):
        # in-place copies (ops.assign), never set_data: compiled steps keep pointing at the same buffers
        for param, shadow in zip(self.params, self.shadow):
            tmp = Tensor(param.asnumpy().copy())
            ops.assign(param, shadow)
            ops.assign(shadow, tmp)

    @contextlib.contextmanager
    def swapped(self):
        """Inside the block the model's parameters hold the EMA weights; restored on exit."""
        self._swap()
        try:
            yield self
        finally:
            self._swap()
