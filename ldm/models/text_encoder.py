"""CLIP text towers for Stable Diffusion: one class for SD 1.x (CLIP ViT-L/14) and SD 2.x (OpenCLIP ViT-H/14).

Parameter names follow MindONE (``transformer.embedding_table``, ``transformer.positional_embedding``,
``transformer.transformer_layer.resblocks.N.{ln_1, attn.attn.in_proj, attn.attn.out_proj, ln_2, c_fc,
c_proj}``, ``transformer.ln_final``), so MindONE checkpoints load unchanged.

The output is ``ln_final`` applied to the last kept layer: SD 1.x keeps all 12 layers (= CLIP's
last_hidden_state); SD 2.x keeps 23 of OpenCLIP's 24 (the penultimate layer, as Stability does).
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ldm.models.layers import gelu_erf
from ldm.models.tokenizer import CLIPTokenizer


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (fp16 on Ascend), cast back after."""

    def construct(self, x):
        dtype = x.dtype
        return super().construct(x.astype(ms.float32)).astype(dtype)


class QuickGELU(nn.Cell):
    """x * sigmoid(1.702 x): OpenAI CLIP's activation (SD 1.x)."""

    def construct(self, x):
        return x * ops.sigmoid(1.702 * x)


class GELU(nn.Cell):
    """Exact (erf) GELU, as torch.nn.GELU and OpenCLIP ViT-H (SD 2.x)."""

    def construct(self, x):
        return gelu_erf(x)


class MultiheadSelfAttention(nn.Cell):
    """Self-attention with one fused q/k/v projection (``in_proj``: rows q, k, v) and ``out_proj``."""

    def __init__(self, width, heads, dtype=ms.float32):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim ** -0.5
        self.in_proj = nn.Dense(width, 3 * width).to_float(dtype)
        self.out_proj = nn.Dense(width, width).to_float(dtype)

    def construct(self, x, mask):
        n, length, width = x.shape
        qkv = self.in_proj(x).reshape(n, length, 3, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q * self.scale, k.swapaxes(-1, -2)).astype(ms.float32) + mask
        weights = ops.softmax(scores, axis=-1).astype(v.dtype)
        out = ops.matmul(weights, v).transpose(0, 2, 1, 3).reshape(n, length, width)
        return self.out_proj(out)


class CausalAttention(nn.Cell):
    """Wrapper that owns the causal mask (MindONE's extra ``attn`` level in the names)."""

    def __init__(self, width, heads, context_length, dtype=ms.float32):
        super().__init__()
        self.attn = MultiheadSelfAttention(width, heads, dtype)
        mask = np.triu(np.full((context_length, context_length), -np.inf, dtype=np.float32), 1)
        self.mask = ms.Tensor(mask)

    def construct(self, x):
        length = x.shape[1]
        return self.attn(x, self.mask[:length, :length])


class ResidualAttentionBlock(nn.Cell):
    """Pre-norm transformer block: x + attn(ln_1(x)); x + c_proj(act(c_fc(ln_2(x))))."""

    def __init__(self, width, heads, context_length, epsilon, use_quick_gelu, dtype=ms.float32):
        super().__init__()
        self.ln_1 = LayerNorm32((width,), epsilon=epsilon)
        self.attn = CausalAttention(width, heads, context_length, dtype)
        self.ln_2 = LayerNorm32((width,), epsilon=epsilon)
        self.c_fc = nn.Dense(width, 4 * width).to_float(dtype)
        self.gelu = QuickGELU() if use_quick_gelu else GELU()
        self.c_proj = nn.Dense(4 * width, width).to_float(dtype)

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))


class Transformer(nn.Cell):
    def __init__(self, width, layers, heads, context_length, epsilon, use_quick_gelu, dtype=ms.float32):
        super().__init__()
        self.resblocks = nn.SequentialCell([
            ResidualAttentionBlock(width, heads, context_length, epsilon, use_quick_gelu, dtype)
            for _ in range(layers)])

    def construct(self, x):
        return self.resblocks(x)


class TextEncoder(nn.Cell):
    """Token + position embedding, ``layers`` causal blocks, final LayerNorm. ids (N, L) -> (N, L, width)."""

    def __init__(self, context_length, vocab_size, width, layers, heads, epsilon, use_quick_gelu,
                 dtype=ms.float32):
        super().__init__()
        self.dtype = dtype
        self.embedding_table = ms.Parameter(
            ms.Tensor(np.random.normal(0, 0.02, (vocab_size, width)).astype(np.float32)),
            name="embedding_table")
        self.positional_embedding = ms.Parameter(
            ms.Tensor(np.random.normal(0, 0.01, (context_length, width)).astype(np.float32)),
            name="positional_embedding")
        self.transformer_layer = Transformer(width, layers, heads, context_length, epsilon,
                                             use_quick_gelu, dtype)
        self.ln_final = LayerNorm32((width,), epsilon=epsilon)
        self.added_embeddings = None   # textual inversion rows after the vocabulary (ldm.models.textual_inversion)

    def construct(self, ids):
        length = ids.shape[1]
        table = self.embedding_table
        if self.added_embeddings is not None:  # a separate Parameter, so only these rows can train
            table = ops.concat((table, self.added_embeddings.astype(table.dtype)), 0)
        x = ops.gather(table, ids, 0) + self.positional_embedding[:length]
        x = self.transformer_layer(x.astype(self.dtype))
        return self.ln_final(x)


class FrozenCLIPEmbedder(nn.Cell):
    """Tokenizer + text tower, the ``cond_stage_model`` of LatentDiffusion (MindONE's parameters).

    Args (MindONE's): use_fp16 (fp16 matmuls, fp32 LayerNorm/softmax), tokenizer_name (accepted for
    MindONE YAMLs; the CLIP BPE tokenizer is the only one), context_length, vocab_size, output_dim
    (unused: no projection, kept for YAML compatibility), width, layers, heads, epsilon,
    use_quick_gelu (True: SD 1.x). Ours: pad_token ("eot" for SD 1.x, 0 for SD 2.x; default
    follows use_quick_gelu).
    """

    def __init__(self, use_fp16=False, tokenizer_name="WordpieceTokenizer", context_length=77,
                 vocab_size=49408, output_dim=768, width=768, layers=12, heads=12, epsilon=1e-5,
                 use_quick_gelu=False, pad_token=None):
        super().__init__()
        if pad_token is None:
            pad_token = "eot" if use_quick_gelu else 0
        self.dtype = ms.float16 if use_fp16 else ms.float32
        self.context_length = context_length
        self.tokenizer = CLIPTokenizer(pad_token=pad_token, context_length=context_length)
        self.transformer = TextEncoder(context_length, vocab_size, width, layers, heads,
                                       float(epsilon), use_quick_gelu, self.dtype)

    def tokenize(self, texts):
        """list[str] -> np.ndarray int32 (N, context_length)."""
        return self.tokenizer(texts)

    def encode(self, ids):
        return self.construct(ids)

    def construct(self, ids):
        return self.transformer(ids)
