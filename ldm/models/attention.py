"""Cross-attention transformer used inside the UNet (LDM ``SpatialTransformer``), MindONE parameter names.

Softmax is always computed in float32; with ``upcast_attention`` (SD 2.x) the q.k^T product is too,
because SD 2.x 768-v overflows fp16 there and produces black/NaN images (tests/test_precision_fp16.py
feeds logits of 80000 > 65504: finite only with the upcast). MindONE keeps softmax and LayerNorm in fp32
only with its ``upcast_attn``; here both are fp32 always (see ``ldm.models.layers``).
"""
from mindspore import nn, ops

from ldm.models.attention_ops import ScaledDotProductAttention
from ldm.models.layers import GroupNorm, LayerNorm, conv2d, dense, gelu_erf


class CrossAttention(nn.Cell):
    """Multi-head attention of ``x`` (B, N, query_dim) over ``context`` (B, M, context_dim) or itself.

    The attention itself (standard, chunked or flash: ``attention``, an AttentionSettings) is
    :class:`ldm.models.attention_ops.ScaledDotProductAttention`, which has no parameters.
    """

    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, upcast_attention=False, attention=None):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.upcast_attention = upcast_attention
        self.to_q = dense(query_dim, inner_dim, bias=False)
        self.to_k = dense(context_dim, inner_dim, bias=False)
        self.to_v = dense(context_dim, inner_dim, bias=False)
        self.to_out = nn.SequentialCell([dense(inner_dim, query_dim), nn.Identity()])  # names to_out.0.*
        self.attention = ScaledDotProductAttention(heads, dim_head, upcast_attention, attention)

    def construct(self, x, context=None):
        context = x if context is None else context
        out = self.attention(self.to_q(x), self.to_k(context), self.to_v(context))
        return self.to_out(out)


class GEGLU(nn.Cell):
    """Gated GELU: proj -> (x, gate) halves -> x * gelu(gate) (exact erf GELU, as PyTorch's default)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = dense(dim_in, dim_out * 2)

    def construct(self, x):
        h = self.proj(x)
        x, gate = ops.chunk(h, 2, axis=-1)
        return x * gelu_erf(gate)


class FeedForward(nn.Cell):
    def __init__(self, dim, mult=4):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.SequentialCell([GEGLU(dim, inner), nn.Identity(), dense(inner, dim)])  # net.0.proj, net.2

    def construct(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Cell):
    """Pre-norm self-attention, cross-attention, GEGLU feed-forward; each with a residual."""

    def __init__(self, dim, n_heads, d_head, context_dim=None, upcast_attention=False, attention=None):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, n_heads, d_head, upcast_attention, attention)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, upcast_attention, attention)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def construct(self, x, context=None):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Cell):
    """(B, C, H, W) feature map -> tokens -> transformer blocks -> feature map, plus the input (residual).

    ``use_linear``: SD 2.x projects tokens with Dense layers (weights (C, C)); SD 1.x uses 1x1 convs
    before flattening (weights (C, C, 1, 1)).
    """

    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None, use_linear=False,
                 upcast_attention=False, attention=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.use_linear = use_linear
        self.norm = GroupNorm(32, in_channels, eps=1e-6)
        if use_linear:
            self.proj_in = dense(in_channels, inner_dim)
            self.proj_out = dense(inner_dim, in_channels, zero_init=True)
        else:
            self.proj_in = conv2d(in_channels, inner_dim, 1)
            self.proj_out = conv2d(inner_dim, in_channels, 1, zero_init=True)
        self.transformer_blocks = nn.CellList([
            BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim, upcast_attention, attention)
            for _ in range(depth)])

    def construct(self, x, context=None):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.reshape(b, x.shape[1], h * w).transpose(0, 2, 1)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(0, 2, 1).reshape(b, x.shape[2], h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in
