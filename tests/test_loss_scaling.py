"""Dynamic loss scaling in the compiled train step, on a linear model in fp32 (the fp16 run that meets real
overflows is tests/test_precision_fp16.py).

The scaler is precision-independent: in fp32 a power-of-two loss scale must leave every update unchanged,
an overflowing step must be dropped (weights, moments and optimiser step untouched) and halve the scale,
and ``scale_window`` finite steps in a row must grow it.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from ldm.train.optim import AdamW
from ldm.train.trainer import TrainStep


class LinearObjective(nn.Cell):
    """loss = mean((latents @ W - noise)^2); the other objective inputs are accepted and ignored."""

    def __init__(self):
        super().__init__()
        w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
        self.w = Parameter(Tensor(w), name="w")

    def construct(self, latents, cond, t, noise, abar, weight):
        return ops.square(ops.matmul(latents, self.w) - noise).mean()


def make_step(scaler):
    objective = LinearObjective()
    optimizer = AdamW([objective.w], (0.9, 0.999), 1e-8, 1e-2)
    step = TrainStep(objective, objective, [objective.w], optimizer, loss_scaler=scaler)
    return step, objective, optimizer


def batch(scale=1.0, seed=1):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((8, 4)) * scale).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    zeros = Tensor(np.zeros(8, np.float32))
    return (Tensor(x), zeros, zeros, Tensor(y), zeros, zeros, Tensor(np.float32(1e-2)))


def test_power_of_two_scale_gives_the_unscaled_updates():
    plain, plain_obj, _ = make_step(None)
    scaled, scaled_obj, _ = make_step(ms.amp.DynamicLossScaler(2.0 ** 12, 2, 1000))
    for seed in range(1, 4):
        loss_a, _, overflow_a = plain.step(*batch(seed=seed))
        loss_b, _, overflow_b = scaled.step(*batch(seed=seed))
        assert not bool(overflow_a.asnumpy()) and not bool(overflow_b.asnumpy())
        assert float(loss_b.asnumpy()) == pytest.approx(float(loss_a.asnumpy()), rel=1e-6)  # reported unscaled
    np.testing.assert_allclose(scaled_obj.w.asnumpy(), plain_obj.w.asnumpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(plain_obj.w.asnumpy(), LinearObjective().w.asnumpy())  # the steps did update


def test_overflow_drops_the_update_and_halves_the_scale():
    scaler = ms.amp.DynamicLossScaler(2.0 ** 12, 2, 1000)
    step, objective, optimizer = make_step(scaler)
    step.step(*batch(seed=1))
    w_before = objective.w.asnumpy().copy()
    m_before = optimizer.exp_avg[0].asnumpy().copy()
    count_before = int(optimizer.step.asnumpy())
    _, _, overflow = step.step(*batch(scale=1e30, seed=2))  # squares overflow float32: inf loss and gradients
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(objective.w.asnumpy(), w_before)
    np.testing.assert_array_equal(optimizer.exp_avg[0].asnumpy(), m_before)
    assert int(optimizer.step.asnumpy()) == count_before
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 11
    _, _, overflow = step.step(*batch(seed=3))  # training goes on with the smaller scale
    assert not bool(overflow.asnumpy())
    assert np.isfinite(objective.w.asnumpy()).all() and not np.array_equal(objective.w.asnumpy(), w_before)


def test_scale_grows_after_a_window_of_finite_steps():
    scaler = ms.amp.DynamicLossScaler(2.0 ** 4, 2, 3)
    step, _, _ = make_step(scaler)
    scales = []
    for seed in range(1, 7):
        step.step(*batch(seed=seed))
        scales.append(float(scaler.scale_value.asnumpy()))
    assert scales == [16.0, 16.0, 32.0, 32.0, 32.0, 64.0]
