"""Training precision: the UNet's compute dtype and the dynamic loss scaler that comes with fp16.

One path on every device (CPU included, so the tests run what Ascend runs): with ``amp_level`` O1/O2/O3
the UNet's Conv2d/Dense cells compute in ``amp_dtype`` while GroupNorm, LayerNorm and softmax (and
q.k^T with ``upcast_attention``) stay fp32 inside their cells, the split MindONE hard-codes for
``use_fp16``. A model YAML with ``use_fp16: True`` already builds that UNet, so it gets the scaler too.
Master weights stay fp32 (the casts sit at the cells' inputs), so the optimiser updates fp32 values.

MindSpore's generic ``ms.amp.auto_mixed_precision`` is not used: on our UNet (MindSpore 2.8 CPU,
2026-12-01) its O2 and O3 gave outputs identical to the cell casts here, and O1 failed in its rewrite
pass ("... got _PyboostBroadcastToPrim"), so the levels are one switch on this model.
"""
import logging

import mindspore as ms

from ldm.errors import UserError
from ldm.models.layers import set_compute_dtype

_log = logging.getLogger("ldm.train")

_DTYPES = {"fp16": ms.float16, "bf16": ms.bfloat16}


def _on_cpu():
    return ms.get_context("device_target") == "CPU"


def amp_compute_dtype(amp_level, amp_dtype):
    """The UNet compute dtype a recipe asks for (None for O0: keep what the model YAML built).

    bf16 is refused on CPU: MindSpore 2.8's CPU MatMul, BatchMatMul, Conv2D, Softmax, Sigmoid and Erf
    have no bf16 kernel ("Select CPU operator[MatMul] fail! Unsupported data type!", measured).
    """
    if amp_level == "O0":
        return None
    if amp_dtype not in _DTYPES:
        raise UserError(f"amp_dtype must be fp16 or bf16, got {amp_dtype!r}")
    if amp_dtype == "bf16" and _on_cpu():
        raise UserError("amp_dtype bf16 is not available on CPU (MindSpore 2.8 CPU has no bf16 MatMul/Conv2D "
                        "kernels): use --amp_dtype fp16, or bf16 on Ascend")
    return _DTYPES[amp_dtype]


def unet_compute_dtype(unet):
    """The dtype the UNet's convs and matmuls run in (what the YAML or :func:`apply_precision` set)."""
    return getattr(unet, "dtype", ms.float32)


def apply_precision(cfg, model):
    """Switch ``model.diffusion_model`` to the recipe's compute dtype. Returns the dynamic loss scaler
    when the UNet computes in less than fp32 (from amp_level or from the YAML's use_fp16), else None."""
    unet = model.diffusion_model
    dtype = amp_compute_dtype(cfg.amp_level, cfg.amp_dtype)
    if dtype is not None:
        if hasattr(unet, "set_compute_dtype"):
            unet.set_compute_dtype(dtype)
        else:  # a plain cell tree (test stand-ins): cast its Conv2d/Dense cells
            set_compute_dtype(unet, dtype)
            unet.dtype = dtype
    compute = unet_compute_dtype(unet)
    if compute == ms.float32:
        return None
    _log.info("UNet computes in %s (norms and softmax fp32); dynamic loss scale from %g, factor %g, window %d",
              compute, cfg.init_loss_scale, cfg.loss_scale_factor, cfg.scale_window)
    return ms.amp.DynamicLossScaler(cfg.init_loss_scale, int(cfg.loss_scale_factor), cfg.scale_window)
