"""Small building blocks shared by the UNet and the VAE.

Norms are computed in float32 (MindSpore's fused kernels) whatever the compute dtype (fp16 GroupNorm/LayerNorm lose too much
precision on SD activations); parameters are named ``gamma``/``beta`` as in MindONE checkpoints.
Convs and Dense layers are plain MindSpore cells, switched to fp16 compute with :func:`set_compute_dtype`.
"""
import math

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer


class GroupNorm(nn.Cell):
    """GroupNorm over (N, C, *spatial), statistics and affine in float32, result in the input dtype."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels are not divisible by {num_groups} groups")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.gamma = Parameter(initializer("ones", (num_channels,), ms.float32), name="gamma", requires_grad=affine)
        self.beta = Parameter(initializer("zeros", (num_channels,), ms.float32), name="beta", requires_grad=affine)

    def construct(self, x):
        dtype = x.dtype
        out = mint.nn.functional.group_norm(x.astype(ms.float32), self.num_groups, self.gamma, self.beta, self.eps)
        return out.astype(dtype)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis, computed in float32; params ``gamma``/``beta``."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.gamma = Parameter(initializer("ones", (dim,), ms.float32), name="gamma")
        self.beta = Parameter(initializer("zeros", (dim,), ms.float32), name="beta")
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        dtype = x.dtype
        out, _, _ = self.layer_norm(x.astype(ms.float32), self.gamma, self.beta)
        return out.astype(dtype)


_SQRT_HALF = 0.7071067811865476


def gelu_erf(x):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with the division written as a multiplication.

    ``ops.gelu(approximate="none")`` lowers to a Div by a 0-d tensor on CPU, which MindSpore 2.8 runs
    through its broadcasting path (index tables as large as the tensor, on fresh memory in a graph's
    first run: profiled at up to 0.5 s per GEGLU call at 64x64 latents). Multiplying by a Python float
    stays on the scalar path. With :func:`add_channel_bias`, the first SD 2.x UNet call fell from
    25.4 s to 18.9 s; later calls gain little (6.8 -> 6.7 s).
    """
    return x * 0.5 * (1.0 + ops.erf(x * _SQRT_HALF))


def add_channel_bias(x, bias):
    """x (N, C, H, W) + bias (N, C) broadcast over H, W, as one BiasAdd over an (1, N*C, H, W) view.

    A broadcasting Add of an (N, C, 1, 1) tensor builds per-element index tables on MindSpore CPU
    (profiled at up to 0.13 s per ResBlock at 64x64 latents); BiasAdd streams the data once.
    """
    n, c, h, w = x.shape
    return ops.bias_add(x.reshape(1, n * c, h, w), bias.reshape(-1)).reshape(n, c, h, w)


class SiLU(nn.Cell):
    def construct(self, x):
        return x * ops.sigmoid(x)


def _init_kwargs(zero_init):
    """Zero-initialised output projections (LDM's ``zero_module``) are set at construction, so building
    under ``mindspore.nn.utils.no_init_parameters`` stays lazy (no memory until weights are loaded)."""
    return dict(weight_init="zeros", bias_init="zeros") if zero_init else {}


def conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, zero_init=False):
    """nn.Conv2d with PyTorch-style explicit zero padding."""
    mode = "pad" if padding else "valid"
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode=mode, padding=padding,
                     has_bias=bias, **_init_kwargs(zero_init))


class WrappedConv2d(nn.Cell):
    """A conv held under the attribute ``conv`` (MindONE's ``conv_nd`` naming: ``<name>.conv.weight``)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = conv2d(*args, **kwargs)

    def construct(self, x):
        return self.conv(x)


def dense(in_features, out_features, bias=True, zero_init=False):
    return nn.Dense(in_features, out_features, has_bias=bias, **_init_kwargs(zero_init))


def timestep_embedding(timesteps, dim, max_period=10000):
    """Sinusoidal embedding (N,) -> (N, dim) float32, cos half first (CompVis; diffusers with
    flip_sin_to_cos=True, freq_shift=0)."""
    half = dim // 2
    exponent = (np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)) / np.float32(half)
    freqs = Tensor(np.exp(exponent).astype(np.float32), ms.float32)
    args = timesteps.astype(ms.float32).reshape(-1, 1) * freqs.reshape(1, -1)
    emb = ops.cat([ops.cos(args), ops.sin(args)], axis=-1)
    if dim % 2:
        emb = ops.cat([emb, ops.zeros_like(emb[:, :1])], axis=-1)
    return emb


def set_compute_dtype(cell, dtype):
    """Run every Conv2d/Dense inside ``cell`` in ``dtype``; norms and softmax stay fp32 by design.

    Every other op then sees fp16 activations. On MindSpore 2.8 CPU (PyNative, 2026-12-01; a missing
    kernel dtype raises "Unsupported data type" there) all ops of the UNet have fp16 kernels, forward and
    backward: MatMul, BatchMatMul, Conv2D (stride 1 and 2), BiasAdd, Sigmoid, Erf, Softmax, Concat,
    BroadcastTo, Transpose, Split, Cos/Sin, Exp; so no op is held in fp32 for want of a kernel. None of
    MatMul, BatchMatMul, Conv2D, Sigmoid, Erf, Softmax, Exp has a bf16 CPU kernel.
    """
    if dtype == ms.float32:
        return cell
    for _, sub in cell.cells_and_names():
        if isinstance(sub, (nn.Conv2d, nn.Dense)):
            sub.to_float(dtype)
    return cell
