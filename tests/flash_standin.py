"""A stand-in for Ascend's FlashAttentionScore that runs on CPU, for tests only.

It takes the primitive's constructor arguments and call signature and implements the documented semantics
in numpy (MindSpore 2.8 docstring of ``ops.operations.nn_ops.FlashAttentionScore``): inputs float16 or
bfloat16; layout ``BSH`` (B, S, N*D) or ``BNSD``; D a multiple of 16 and at most 512; ``attention_out =
softmax(scale_value * q k^T) v`` per head with an fp32 softmax (``keep_prob`` 1: no dropout; ``attn_mask``
entries 1 = discard); outputs (softmax_max, softmax_sum, softmax_out, attention_out) with softmax_max /
softmax_sum (B, N, S1, 8) float32 and attention_out of the query's shape and dtype. Anything outside
that contract raises, so a wrong call (fp32 inputs, an unpadded head size, a wrong scale) fails the test.
Every call's arguments are recorded in :data:`CALLS` (shapes, dtypes, attributes).
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

CALLS = []
LAYOUTS = ("BSH", "BNSD")


def _heads_view(x, layout, heads):
    """(B, N, S, D) view of a BSH / BNSD array."""
    if layout == "BSH":
        b, s, h = x.shape
        return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)
    return x


def reference(q, k, v, heads, scale, layout, mask=None):
    """The documented attention in float64 numpy (output in the layout of q, float32)."""
    qh, kh, vh = (_heads_view(t.astype(np.float64), layout, heads) for t in (q, k, v))
    scores = scale * qh @ kh.transpose(0, 1, 3, 2)
    if mask is not None:
        scores = np.where(mask.astype(bool), -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = probs @ vh
    if layout == "BSH":
        b, n, s, d = out.shape
        out = out.transpose(0, 2, 1, 3).reshape(b, s, n * d)
    return out


class FlashAttentionScoreStandIn(nn.Cell):
    """Same constructor and call as FlashAttentionScore; forward only (numpy through ops.Custom)."""

    def __init__(self, head_num, keep_prob=1.0, scale_value=1.0, pre_tokens=2147483647, next_tokens=2147483647,
                 inner_precise=0, input_layout="BSH", sparse_mode=0):
        super().__init__()
        if not isinstance(head_num, int) or head_num < 1 or head_num > 256:
            raise ValueError(f"head_num must be an int in [1, 256], got {head_num!r}")
        if not 0.0 < float(keep_prob) <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
        if input_layout not in LAYOUTS:
            raise ValueError(f"input_layout {input_layout!r} is not one this stand-in implements ({LAYOUTS})")
        self.head_num, self.keep_prob, self.scale_value = head_num, float(keep_prob), float(scale_value)
        self.input_layout = input_layout
        self.attrs = dict(head_num=head_num, keep_prob=float(keep_prob), scale_value=float(scale_value),
                          input_layout=input_layout, sparse_mode=sparse_mode)

        def run(q, k, v):
            if q.dtype != np.float16:
                raise TypeError(f"FlashAttentionScore takes float16/bfloat16 inputs, got {q.dtype}")
            if not (k.dtype == v.dtype == q.dtype) or k.shape != v.shape:
                raise TypeError("key and value must match the query's dtype and each other's shape")
            hidden = q.shape[-1] if input_layout == "BSH" else q.shape[-1] * head_num
            if hidden % head_num:
                raise ValueError(f"hidden size {hidden} is not a multiple of head_num {head_num}")
            d = hidden // head_num
            if d % 16 or d > 512:
                raise ValueError(f"head size D={d} must be a multiple of 16 and at most 512")
            if self.keep_prob != 1.0:
                raise ValueError("this stand-in implements keep_prob 1 only (no dropout)")
            CALLS.append(dict(self.attrs, query=q.shape, key=k.shape, dtype=str(q.dtype), head_dim=d))
            out = reference(q, k, v, head_num, self.scale_value, input_layout)
            return out.astype(np.float16)

        self.kernel = ops.Custom(run, out_shape=lambda q, k, v: q, out_dtype=lambda q, k, v: q, func_type="pyfunc")

    def construct(self, query, key, value, real_shift=None, drop_mask=None, padding_mask=None, attn_mask=None,
                  prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None):
        out = self.kernel(query, key, value)
        b = query.shape[0]
        s1 = query.shape[1] if self.input_layout == "BSH" else query.shape[2]
        stats = ops.zeros((b, self.head_num, s1, 8), ms.float32)
        return stats, stats, ops.zeros((), query.dtype), out


def factory(head_num, scale_value, keep_prob, input_layout):
    """What ldm.models.attention_ops.set_flash_kernel takes."""
    return FlashAttentionScoreStandIn(head_num=head_num, keep_prob=keep_prob, scale_value=scale_value,
                                      input_layout=input_layout)
