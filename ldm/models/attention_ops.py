"""Scaled dot-product attention with three backends behind one switch: standard, chunked, flash.

All three take and return the "BSH" layout the transformer already has: q (B, N, H*D), k and v
(B, M, H*D) -> (B, N, H*D), with softmax(scale * q k^T) v per head; softmax is always float32 and
``upcast`` (SD 2.x) also keeps q k^T in float32 (:mod:`ldm.models.attention` says why).

* ``standard``: the whole (B, H, N, M) score tensor at once, as CompVis and diffusers' AttnProcessor.
  At 768 px (96x96 latents, 9216 tokens) with guidance and 4 images that is 8 x 5 x 9216^2 floats =
  13.6 GB for the top level's scores alone, and the softmax holds a second copy.
* ``chunked``: exact memory-efficient attention in plain ops: the queries are cut into row chunks
  and each chunk gets its own full softmax over all keys, so every row is computed exactly as in
  ``standard`` (same reductions, same order) while only one chunk's scores live at a time. The
  backward pass is written out (:class:`ChunkedAttentionCore.bprop`) and recomputes each chunk's
  probabilities from q, k, v instead of keeping them, as flash attention does; autodiff of the
  forward would keep every chunk's probabilities, i.e. the whole score tensor again.
* ``flash``: Ascend's fused ``FlashAttentionScore`` kernel (Atlas A2), called as MindONE calls it:
  fp16/bf16 inputs (an fp32 model's q, k, v are cast to fp16), ``scale_value`` = D^-0.5 of the real
  head size, ``keep_prob`` 1 (no dropout), no mask, the head size zero-padded up to one the kernel
  takes (64, 80, 96, 128, 256: MindONE's list; zero columns change neither q k^T nor the kept part
  of the output) and the padding sliced off after. CPU and GPU have no such kernel.

``auto`` chooses per call from the static shapes and dtype: flash where the kernel exists (Ascend), the
head size fits it and the model computes in fp16/bf16, else chunked when one call's fp32 scores exceed
:data:`CHUNK_BUDGET_BYTES`, else standard. The choice is made while the graph is traced, so a compiled
graph holds one path only.
"""
import dataclasses

import mindspore as ms
from mindspore import nn, ops

from ldm.errors import UserError

MODES = ("auto", "standard", "chunked", "flash")
CHUNK_BUDGET_BYTES = 512 * 2 ** 20      # fp32 scores of one chunk (auto's threshold and chunked's default)
FLASH_HEAD_DIMS = (64, 80, 96, 128, 256)  # head sizes FlashAttentionScore is run at (MindONE's padding list)
FLASH_DTYPES = (ms.float16, ms.bfloat16)


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    """The attention switch of a model: ``mode`` in MODES; ``chunk``: query rows per chunk for
    ``chunked`` (None: as many rows as keep one chunk's fp32 scores within CHUNK_BUDGET_BYTES)."""
    mode: str = "auto"
    chunk: int = None


class AttentionSettingsError(UserError, ValueError):
    """A bad attention mode or chunk size (a UserError: one line at the CLIs)."""


def check_settings(mode, chunk=None, what="attention"):
    """AttentionSettings from user values; AttentionSettingsError naming the option when they are bad."""
    if not isinstance(mode, str) or mode not in MODES:
        raise AttentionSettingsError(f"{what} {mode!r}: choose one of {', '.join(MODES)}")
    if chunk is not None:
        ok = isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0
        if not ok:
            raise AttentionSettingsError(f"{what} chunk must be a positive whole number of query rows, "
                                         f"got {chunk!r}")
    return AttentionSettings(mode, chunk)


def settings_from_keys(attention=None, attention_chunk=None, enable_flash_attention=None, what="attention"):
    """The switch from a config's keys: ``attention`` (ours) wins; unset, MindONE's
    ``enable_flash_attention: True`` means flash; neither: auto."""
    mode = attention if attention is not None else ("flash" if enable_flash_attention else "auto")
    return check_settings(mode, attention_chunk, what)


def settings_from_config(config, attention=None, attention_chunk=None, enable_flash_attention=None):
    """The switch of a model config (dict or YAML path): its ``unet_config.params`` keys, each replaced by
    the value given here when that is not None (the CLIs' flags), then :func:`settings_from_keys`."""
    from ldm.util import load_config, part_params
    cfg = config if isinstance(config, dict) or config is None else load_config(config)
    unet = part_params(cfg, "unet_config") if cfg else {}
    keys = {name: unet.get(name) for name in ("attention", "attention_chunk", "enable_flash_attention")}
    given = dict(attention=attention, attention_chunk=attention_chunk, enable_flash_attention=enable_flash_attention)
    keys.update({name: value for name, value in given.items() if value is not None})
    return settings_from_keys(**keys, what="model config: unet_config attention")


# ---------------------------------------------------------------- the flash kernel
def _mindspore_flash_kernel(head_num, scale_value, keep_prob, input_layout):
    from mindspore.ops.operations.nn_ops import FlashAttentionScore
    return FlashAttentionScore(head_num=head_num, keep_prob=keep_prob, scale_value=scale_value,
                               input_layout=input_layout)


_flash_kernel_factory = None     # tests inject a stand-in here (tests/flash_standin.py)


def set_flash_kernel(factory):
    """Use ``factory(head_num, scale_value, keep_prob, input_layout) -> primitive`` as the flash
    kernel on every device (None: MindSpore's FlashAttentionScore, on Ascend only). For tests: it
    lets the flash call path run on CPU through a stand-in with the kernel's documented semantics."""
    global _flash_kernel_factory
    _flash_kernel_factory = factory


def flash_available(device=None):
    """Whether a flash kernel can run here: an injected stand-in, or Ascend with MindSpore's kernel."""
    if _flash_kernel_factory is not None:
        return True
    return (device or ms.get_context("device_target")) == "Ascend"


def flash_head_dim(dim_head):
    """The padded head size the kernel runs at, or None when the head is too large for it."""
    return next((d for d in FLASH_HEAD_DIMS if d >= dim_head), None)


def _make_flash_kernel(head_num, scale_value):
    factory = _flash_kernel_factory or _mindspore_flash_kernel
    return factory(head_num, scale_value, 1.0, "BSH")


# ---------------------------------------------------------------- chunked attention
def auto_chunk_rows(batch_heads, n_keys, budget=CHUNK_BUDGET_BYTES):
    """Query rows per chunk so that one chunk's fp32 scores (batch*heads, rows, keys) fit ``budget``."""
    return max(1, budget // (4 * batch_heads * n_keys))


class ChunkedAttentionCore(nn.Cell):
    """softmax(scale q k^T) v over query-row chunks, q (BH, N, D), k and v (BH, M, D) -> (BH, N, D).

    Forward: per chunk, scores (in fp32 with ``upcast``), fp32 softmax, cast to v's dtype, times v.
    Backward (``bprop``): per chunk, the probabilities P are recomputed, then
    dV += P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),  dQ = scale dS K,  dK += scale dS^T Q,
    so a chunk is the only score-sized tensor alive in either pass.
    """

    def __init__(self, scale, upcast, chunk):
        super().__init__()
        self.scale = scale
        self.upcast = upcast
        self.chunk = chunk
        self.bmm_nt = ops.BatchMatMul(transpose_b=True)
        self.bmm = ops.BatchMatMul()
        self.bmm_tn = ops.BatchMatMul(transpose_a=True)

    def _rows(self, q, k):
        return self.chunk or auto_chunk_rows(q.shape[0], k.shape[1])

    def probs(self, q_c, k):
        """fp32 softmax(scale q_c k^T) of one chunk (the standard path's whole score tensor too)."""
        if self.upcast:
            q_c, k = q_c.astype(ms.float32), k.astype(ms.float32)
        return ops.softmax(self.bmm_nt(q_c * self.scale, k).astype(ms.float32), axis=-1)

    def construct(self, q, k, v):
        outs = ()
        n = q.shape[1]
        rows = self._rows(q, k)
        for start in range(0, n, rows):
            stop = start + rows if start + rows < n else n
            # chunk i+1 waits for chunk i: independent chunks would otherwise run concurrently and
            # hold their scores together (measured, 9216 tokens, 5 heads, 512-row chunks: 1.9 GB -> 0.4 GB)
            q_c = q[:, start:stop] if not outs else ops.depend(q[:, start:stop], outs[-1])
            p = self.probs(q_c, k).astype(v.dtype)
            outs = outs + (self.bmm(p, v),)
        return outs[0] if len(outs) == 1 else ops.cat(outs, axis=1)

    def bprop(self, q, k, v, out, dout):
        # the products run in the dtypes of the forward's (q k^T in fp32 only with upcast; P V and its
        # gradients in v's dtype: fp16 under O2, as autodiff of the standard path gives, and as
        # scripts/ascend_audit.py checks), while P, dP, dS and the dK, dV accumulators stay fp32
        qk_dtype = ms.float32 if self.upcast else q.dtype
        dqs = ()
        dk = ops.zeros(k.shape, ms.float32)
        dv = ops.zeros(v.shape, ms.float32)
        n = q.shape[1]
        rows = self._rows(q, k)
        for start in range(0, n, rows):
            stop = start + rows if start + rows < n else n
            q_c = ops.depend(q[:, start:stop], dk)         # one chunk at a time (see construct)
            do_c = dout[:, start:stop]
            p = self.probs(q_c, k)
            dv = dv + self.bmm_tn(p.astype(v.dtype), do_c).astype(ms.float32)
            dp = self.bmm_nt(do_c, v).astype(ms.float32)
            ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
            ds = ds.astype(qk_dtype)
            dqs = dqs + ((self.bmm(ds, k.astype(qk_dtype)) * self.scale).astype(q.dtype),)
            dk = dk + self.bmm_tn(ds, q_c.astype(qk_dtype)).astype(ms.float32) * self.scale
        dq = dqs[0] if len(dqs) == 1 else ops.cat(dqs, axis=1)
        return dq, dk.astype(k.dtype), dv.astype(v.dtype)


# ---------------------------------------------------------------- the switch
class ScaledDotProductAttention(nn.Cell):
    """Multi-head attention core (no projections): q (B, N, H*D), k, v (B, M, H*D) -> (B, N, H*D).

    Holds no parameters, so models keep their parameter names whatever the backend. ``set_settings``
    switches the backend before a graph is compiled (a compiled graph keeps the path it traced).
    """

    def __init__(self, heads, dim_head, upcast=False, settings=None):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.upcast = upcast
        self.bmm_nt = ops.BatchMatMul(transpose_b=True)
        self.bmm = ops.BatchMatMul()
        self.set_settings(settings or AttentionSettings())

    def set_settings(self, settings, device=None):
        """Apply an AttentionSettings; flash is kept only where a kernel exists and fits this head size
        (else chunked: callers print the notice, see :func:`describe`)."""
        self.flash_dim = flash_head_dim(self.dim_head)
        use_flash = settings.mode in ("flash", "auto") and flash_available(device) and self.flash_dim is not None
        self.mode = "chunked" if settings.mode == "flash" and not use_flash else settings.mode
        self.chunked = ChunkedAttentionCore(self.scale, self.upcast, settings.chunk)
        self.flash = _make_flash_kernel(self.heads, self.scale) if use_flash else None

    def path_for(self, batch, n_queries, n_keys, dtype=ms.float32):
        """The path a call of these static sizes and this compute dtype takes: 'standard', 'chunked' or
        'flash'. auto takes the kernel only for fp16/bf16 models (it computes in fp16/bf16: an fp32 model
        keeps fp32 attention unless flash is asked for, as MindONE's enable_flash_attention does)."""
        if self.mode in ("standard", "chunked", "flash"):
            return self.mode
        if self.flash is not None and dtype in FLASH_DTYPES:
            return "flash"
        return "chunked" if scores_bytes(batch, self.heads, n_queries, n_keys) > CHUNK_BUDGET_BYTES else "standard"

    def _split_heads(self, x):
        """(B, S, H*D) -> (B*H, S, D)."""
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim_head).transpose(0, 2, 1, 3).reshape(b * self.heads, n,
                                                                                       self.dim_head)

    def _merge_heads(self, x, b):
        """(B*H, S, D) -> (B, S, H*D)."""
        _, n, _ = x.shape
        return x.reshape(b, self.heads, n, self.dim_head).transpose(0, 2, 1, 3).reshape(b, n, self.heads * self.dim_head)

    def construct(self, q, k, v):
        b, n, _ = q.shape
        path = self.path_for(b, n, k.shape[1], q.dtype)
        if path == "flash":
            return self._flash(q, k, v)
        dtype = q.dtype
        qh, kh, vh = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if path == "chunked":
            out = self.chunked(qh, kh, vh)
        else:          # one chunk of every row, differentiated by autodiff (it keeps the probabilities)
            out = self.bmm(self.chunked.probs(qh, kh).astype(vh.dtype), vh)
        return self._merge_heads(out.astype(dtype), b)

    def _pad_heads(self, x, dtype):
        """(B, S, H*D) -> (B, S, H*Dp) in the kernel's dtype, each head zero-padded to Dp."""
        x = x.astype(dtype)
        pad = self.flash_dim - self.dim_head
        if not pad:
            return x
        b, s, _ = x.shape
        x = x.reshape(b, s, self.heads, self.dim_head)
        x = ops.cat((x, ops.zeros((b, s, self.heads, pad), dtype)), axis=-1)
        return x.reshape(b, s, self.heads * self.flash_dim)

    def _flash(self, q, k, v):
        dtype = q.dtype
        kernel_dtype = dtype if dtype in FLASH_DTYPES else ms.float16
        qp, kp, vp = (self._pad_heads(t, kernel_dtype) for t in (q, k, v))
        out = self.flash(qp, kp, vp, None, None, None, None)[3]
        if self.flash_dim != self.dim_head:
            b, s, _ = out.shape
            out = out.reshape(b, s, self.heads, self.flash_dim)[:, :, :, :self.dim_head]
            out = out.reshape(b, s, self.heads * self.dim_head)
        return out.astype(dtype)


def attention_cells(model):
    return [cell for _, cell in model.cells_and_names() if isinstance(cell, ScaledDotProductAttention)]


def apply_settings(model, settings, device=None):
    """Set every attention core inside ``model``; returns how many there are."""
    cells = attention_cells(model)
    for cell in cells:
        cell.set_settings(settings, device)
    return len(cells)


def describe(settings, device=None, label=None):
    """One line for the log: what the switch does on this device. Flash asked for where no kernel exists
    is the notice line ``<label>: there is no flash-attention kernel on <device> ...; using chunked``
    (``label`` default ``attention flash``; the training CLIs pass ``enable_flash_attention`` for MindONE's key)."""
    device = device or ms.get_context("device_target")
    budget = f"{CHUNK_BUDGET_BYTES // 2 ** 20} MiB"
    chunk = f"{settings.chunk} query rows a chunk" if settings.chunk else f"chunks of at most {budget} of scores"
    if settings.mode == "flash" and not flash_available(device):
        return (f"{label or 'attention flash'}: there is no flash-attention kernel on {device} (Ascend's "
                f"FlashAttentionScore); using chunked attention ({chunk})")
    if settings.mode == "chunked":
        return f"attention chunked ({chunk})"
    return f"attention {settings.mode}" + (" (FlashAttentionScore)" if settings.mode == "flash" else "")


def scores_bytes(batch, heads, n_queries, n_keys):
    """fp32 bytes of one standard call's score tensor."""
    return 4 * batch * heads * n_queries * n_keys


def peak_scores_bytes(mode, batch, heads, n_queries, n_keys, chunk=None):
    """fp32 score bytes one call holds at a time under ``mode`` (flash: the kernel's tiles, ~0)."""
    if mode == "flash":
        return 0
    full = scores_bytes(batch, heads, n_queries, n_keys)
    if mode == "standard" or (mode == "auto" and full <= CHUNK_BUDGET_BYTES):
        return full
    rows = chunk or auto_chunk_rows(batch * heads, n_keys)
    return scores_bytes(batch, heads, min(rows, n_queries), n_keys)
