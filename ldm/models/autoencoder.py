"""AutoencoderKL (the SD VAE): Encoder, Decoder and the diagonal Gaussian posterior, CompVis/MindONE names.

Names equal the Stability checkpoints' except GroupNorm ``weight/bias`` -> ``gamma/beta``
(see :mod:`ldm.convert.names_vae`). GroupNorm eps is 1e-6 throughout, as in CompVis and diffusers.
"""
import mindspore as ms
from mindspore import nn, ops

from ldm.models.attention_ops import ScaledDotProductAttention
from ldm.models.layers import GroupNorm, SiLU, conv2d, set_compute_dtype
from ldm.models.unet import upsample_nearest2x


def vae_norm(channels):
    return GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Cell):
    def __init__(self, in_channels, out_channels=None):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = vae_norm(in_channels)
        self.conv1 = conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = vae_norm(out_channels)
        self.conv2 = conv2d(out_channels, out_channels, 3, padding=1)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.nin_shortcut = conv2d(in_channels, out_channels, 1)
        self.act = SiLU()

    def construct(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        if self.has_shortcut:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Cell):
    """Single-head self-attention over all pixels, 1x1-conv projections, softmax in float32.

    The attention is :class:`ldm.models.attention_ops.ScaledDotProductAttention` (one head of ``channels``),
    so the attention switch applies here too: at 768 px the decoder's mid-block holds 9216 x 9216 scores
    per image, which ``chunked`` cuts into row chunks.
    """

    def __init__(self, channels, attention=None):
        super().__init__()
        self.norm = vae_norm(channels)
        self.q = conv2d(channels, channels, 1)
        self.k = conv2d(channels, channels, 1)
        self.v = conv2d(channels, channels, 1)
        self.proj_out = conv2d(channels, channels, 1)
        self.attention = ScaledDotProductAttention(1, channels, settings=attention)

    def construct(self, x):
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(0, 2, 1)
        k = self.k(hn).reshape(b, c, h * w).transpose(0, 2, 1)
        v = self.v(hn).reshape(b, c, h * w).transpose(0, 2, 1)
        out = self.attention(q, k, v).transpose(0, 2, 1).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Cell):
    """Pad right/bottom by one, then a stride-2 3x3 conv (CompVis' asymmetric padding).

    The padding (top, bottom, left, right) = (0, 1, 0, 1) is the conv's own: with a separate ``ops.pad``
    per level, MindSpore 2.8 on CPU hangs on the 18th call of a compiled training step whose backward
    passes through two of them (measured: encoder training froze at step 18 whatever the seed).
    """

    def __init__(self, channels):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, stride=2, padding=(0, 1, 0, 1))

    def construct(self, x):
        return self.conv(x)


class Upsample(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        return self.conv(upsample_nearest2x(x))


class Level(nn.Cell):
    """One resolution level: ``block.i`` ResnetBlocks, ``attn`` (empty for SD), optional resampler."""

    def __init__(self, blocks, resample_name=None, resample=None):
        super().__init__()
        self.block = nn.CellList(blocks)
        self.attn = nn.CellList([])
        self.resample_name = resample_name
        if resample_name is not None:
            setattr(self, resample_name, resample)

    def run_blocks(self, x):
        for block in self.block:
            x = block(x)
        return x


class MidBlock(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.block_1 = ResnetBlock(channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels)

    def construct(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


def _check_ddconfig(attn_resolutions):
    if attn_resolutions:
        raise ValueError("VAE attn_resolutions must be [] (Stable Diffusion's VAE has attention only in the middle)")


class Encoder(nn.Cell):
    """(N, in_channels, H, W) -> (N, 2*z_channels, H/f, W/f) moments (mean and logvar halves)."""

    def __init__(self, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, in_channels=3, z_channels=4, double_z=True,
                 attn_resolutions=(), **ignored):
        super().__init__()
        _check_ddconfig(attn_resolutions)
        self.conv_in = conv2d(in_channels, ch, 3, padding=1)
        levels = []
        block_in = ch
        for i, mult in enumerate(ch_mult):
            block_out = ch * mult
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(num_res_blocks)]
            block_in = block_out
            last = i == len(ch_mult) - 1
            levels.append(Level(blocks, None if last else "downsample", None if last else Downsample(block_in)))
        self.down = nn.CellList(levels)
        self.num_levels = len(ch_mult)
        self.mid = MidBlock(block_in)
        self.norm_out = vae_norm(block_in)
        self.conv_out = conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)
        self.act = SiLU()

    def construct(self, x):
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level.run_blocks(h)
            if i != self.num_levels - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(self.act(self.norm_out(h)))


class Decoder(nn.Cell):
    """(N, z_channels, h, w) -> (N, out_ch, h*f, w*f); ``up.i`` is level i (up.0 is the full-resolution one)."""

    def __init__(self, ch=128, out_ch=3, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4,
                 attn_resolutions=(), **ignored):
        super().__init__()
        _check_ddconfig(attn_resolutions)
        block_in = ch * ch_mult[-1]
        self.conv_in = conv2d(z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in)
        levels = []
        for i in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[i]
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out) for j in range(num_res_blocks + 1)]
            block_in = block_out
            levels.insert(0, Level(blocks, "upsample" if i else None, Upsample(block_in) if i else None))
        self.up = nn.CellList(levels)
        self.num_levels = len(ch_mult)
        self.norm_out = vae_norm(block_in)
        self.conv_out = conv2d(block_in, out_ch, 3, padding=1)
        self.act = SiLU()

    def construct(self, z):
        h = self.mid(self.conv_in(z))
        for i in range(self.num_levels - 1, -1, -1):
            level = self.up[i]
            h = level.run_blocks(h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(self.act(self.norm_out(h)))


class AutoencoderKL(nn.Cell):
    """KL-regularised autoencoder. ``encode(x) -> (mean, logvar)``; ``decode(z) -> x``; ``construct`` = decode(mean).

    Scaling by ``scale_factor`` (0.18215) is the LatentDiffusion wrapper's job, not this class's.
    """

    def __init__(self, ddconfig, embed_dim=4, use_fp16=False, **ignored):
        super().__init__()
        ddconfig = dict(ddconfig)
        use_fp16 = ddconfig.pop("use_fp16", use_fp16)
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        z_channels = ddconfig.get("z_channels", 4)
        double_z = ddconfig.get("double_z", True)
        self.quant_conv = conv2d((2 if double_z else 1) * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = conv2d(embed_dim, z_channels, 1)
        self.embed_dim = embed_dim
        self.dtype = ms.float16 if use_fp16 else ms.float32
        set_compute_dtype(self, self.dtype)

    def encode(self, x):
        """Images in [-1, 1] (N,3,H,W) -> posterior (mean, logvar), each (N, embed_dim, H/8, W/8) float32."""
        moments = self.quant_conv(self.encoder(x.astype(self.dtype))).astype(ms.float32)
        mean, logvar = ops.chunk(moments, 2, axis=1)
        return mean, ops.clamp(logvar, -30.0, 20.0)

    @staticmethod
    def sample(mean, logvar, noise):
        """Reparameterised posterior sample mean + exp(logvar / 2) * noise."""
        return mean + ops.exp(0.5 * logvar) * noise

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z.astype(self.dtype))).astype(ms.float32)

    def construct(self, x):
        mean, _ = self.encode(x)
        return self.decode(mean)
