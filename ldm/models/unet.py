"""The LDM denoising UNet (CompVis ``openaimodel.UNetModel`` structure) with MindONE parameter names.

Every block takes ``(x, emb, context)`` so that ``input_blocks.i`` / ``output_blocks.i`` can be plain
CellLists that compile in GRAPH mode without type dispatch. Name differences from the Stability
checkpoints (``in_layers.2`` -> ``in_layers_conv.conv``, norms ``weight/bias`` -> ``gamma/beta``, ...)
are listed in :mod:`ldm.convert.names_unet`.
"""
import mindspore as ms
from mindspore import nn, ops

from ldm.models.attention import SpatialTransformer
from ldm.models.attention_ops import settings_from_keys
from ldm.models.layers import (GroupNorm, SiLU, WrappedConv2d, add_channel_bias, dense, set_compute_dtype,
                               timestep_embedding)


class ResBlock(nn.Cell):
    """GroupNorm-SiLU-conv, add the projected timestep embedding, GroupNorm-SiLU-conv, plus a skip path."""

    def __init__(self, channels, emb_channels, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers_norm = GroupNorm(32, channels)
        self.in_layers_conv = WrappedConv2d(channels, out_channels, 3, padding=1)
        self.emb_layers = nn.SequentialCell([SiLU(), dense(emb_channels, out_channels)])
        self.out_layers_norm = GroupNorm(32, out_channels)
        self.out_layers_conv = WrappedConv2d(out_channels, out_channels, 3, padding=1, zero_init=True)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else WrappedConv2d(channels, out_channels, 1))
        self.act = SiLU()

    def construct(self, x, emb, context=None):
        h = self.in_layers_conv(self.act(self.in_layers_norm(x)))
        h = add_channel_bias(h, self.emb_layers(emb).astype(h.dtype))
        h = self.out_layers_conv(self.act(self.out_layers_norm(h)))
        return self.skip_connection(x) + h


class InputConv(WrappedConv2d):
    """First 3x3 conv (``input_blocks.0.0.conv``) with the block signature."""

    def construct(self, x, emb=None, context=None):
        return self.conv(x)


class Downsample(nn.Cell):
    """Stride-2 3x3 conv (``op.conv``)."""

    def __init__(self, channels, out_channels=None):
        super().__init__()
        self.op = WrappedConv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def construct(self, x, emb=None, context=None):
        return self.op(x)


def upsample_nearest2x(x):
    """Nearest-neighbour 2x upsampling by broadcasting (exact, and fast in GRAPH mode on every backend)."""
    b, c, h, w = x.shape
    x = ops.broadcast_to(x.reshape(b, c, h, 1, w, 1), (b, c, h, 2, w, 2))
    return x.reshape(b, c, h * 2, w * 2)


class Upsample(nn.Cell):
    """Nearest 2x then a 3x3 conv (``conv.conv``)."""

    def __init__(self, channels, out_channels=None):
        super().__init__()
        self.conv = WrappedConv2d(channels, out_channels or channels, 3, padding=1)

    def construct(self, x, emb=None, context=None):
        return self.conv(upsample_nearest2x(x))


class TimestepEmbedSequential(nn.SequentialCell):
    """Blocks applied in order, each called as ``block(x, emb, context)``; child names are 0, 1, 2."""

    def construct(self, x, emb, context):
        for block in self.cell_list:
            x = block(x, emb, context)
        return x


class TransformerBlock(SpatialTransformer):
    """SpatialTransformer that accepts (and ignores) the timestep embedding."""

    def construct(self, x, emb=None, context=None):
        return super().construct(x, context)


def transformer_factory(num_heads, num_head_channels, depth, context_dim, use_linear, upcast_attention,
                        attention_settings):
    """``transformer(ch)``: the SpatialTransformer of width ``ch`` by the UNet's head rule (``num_head_channels``
    wins over ``num_heads`` unless it is -1); the UNet and the ControlNet build theirs with it."""
    def transformer(ch):
        if num_head_channels == -1:
            heads, dim_head = num_heads, ch // num_heads
        else:
            heads, dim_head = ch // num_head_channels, num_head_channels
        return TransformerBlock(ch, heads, dim_head, depth, context_dim, use_linear, upcast_attention,
                                attention_settings)
    return transformer


def encoder_blocks(in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
                   time_embed_dim, transformer):
    """The encoder half, ``input_blocks.*`` (the UNet's, and the ControlNet's copy of it): a list of
    TimestepEmbedSequential and the channel count of each block's output (the skip connections)."""
    blocks = [TimestepEmbedSequential([InputConv(in_channels, model_channels, 3, padding=1)])]
    skip_channels = [model_channels]
    ch, ds = model_channels, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = [ResBlock(ch, time_embed_dim, mult * model_channels)]
            ch = mult * model_channels
            if ds in attention_resolutions:
                layers.append(transformer(ch))
            blocks.append(TimestepEmbedSequential(layers))
            skip_channels.append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(TimestepEmbedSequential([Downsample(ch)]))
            skip_channels.append(ch)
            ds *= 2
    return blocks, skip_channels


def middle_block(ch, time_embed_dim, transformer):
    """``middle_block``: ResBlock, transformer, ResBlock at width ``ch``."""
    return TimestepEmbedSequential([ResBlock(ch, time_embed_dim), transformer(ch), ResBlock(ch, time_embed_dim)])


class UNetModel(nn.Cell):
    """Latent-space UNet: ``construct(x (N,C,H,W), timesteps (N,), context (N,L,context_dim)) -> (N,C_out,H,W)``.

    Parameters follow CompVis/MindONE YAMLs. Heads: ``num_head_channels`` (SD 2.x: 64) wins over
    ``num_heads`` (SD 1.x: 8) unless it is -1. ``use_linear_in_transformer``: Dense proj_in/out (SD 2.x).
    ``use_checkpoint`` (alias ``use_recompute``): recompute every ResBlock/transformer in the backward pass.
    ``use_fp16``: fp16 convs/matmuls with fp32 norms and softmax; ``upcast_attention`` (SD 2.x) also keeps q.k^T in fp32.
    Attention (:mod:`ldm.models.attention_ops`): ``attention`` auto | standard | chunked | flash, ``attention_chunk``
    (query rows per chunk), MindONE's ``enable_flash_attention`` (True = flash where ``attention`` is unset).
    Unused CompVis/MindONE keys (image_size, dims, legacy, ...) are accepted and ignored.
    """

    def __init__(self, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=2,
                 attention_resolutions=(4, 2, 1), channel_mult=(1, 2, 4, 4), num_heads=-1, num_head_channels=-1,
                 transformer_depth=1, context_dim=None, use_linear_in_transformer=False, use_checkpoint=False,
                 use_recompute=None, use_fp16=False, upcast_attention=False, conv_resample=True,
                 use_spatial_transformer=True, num_heads_upsample=-1, use_scale_shift_norm=False,
                 resblock_updown=False, num_classes=None, attention=None, attention_chunk=None,
                 enable_flash_attention=None, **ignored):
        super().__init__()
        if num_classes is not None:
            raise ValueError("class-conditional UNets (num_classes) are not supported")
        if use_scale_shift_norm or resblock_updown or not conv_resample or not use_spatial_transformer:
            raise ValueError("only the Stable Diffusion UNet layout is supported: use_scale_shift_norm=False, "
                             "resblock_updown=False, conv_resample=True, use_spatial_transformer=True")
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("set either num_heads or num_head_channels")
        if isinstance(context_dim, (list, tuple)):
            context_dim = context_dim[0]
        self.attention_settings = settings_from_keys(attention, attention_chunk, enable_flash_attention,
                                                     "unet_config attention")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.dtype = ms.float16 if use_fp16 else ms.float32
        recompute = use_checkpoint if use_recompute is None else use_recompute
        time_embed_dim = model_channels * 4
        self.time_embed = nn.SequentialCell([dense(model_channels, time_embed_dim), SiLU(),
                                             dense(time_embed_dim, time_embed_dim)])

        transformer = transformer_factory(num_heads, num_head_channels, transformer_depth, context_dim,
                                          use_linear_in_transformer, upcast_attention, self.attention_settings)
        blocks, skip_channels = encoder_blocks(in_channels, model_channels, channel_mult, num_res_blocks,
                                               attention_resolutions, time_embed_dim, transformer)
        self.input_blocks = nn.CellList(blocks)
        ch, ds = skip_channels[-1], 2 ** (len(channel_mult) - 1)
        self.middle_block = middle_block(ch, time_embed_dim, transformer)
        blocks = []
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), time_embed_dim, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(TimestepEmbedSequential(layers))
        self.output_blocks = nn.CellList(blocks)
        self.out = nn.SequentialCell([GroupNorm(32, ch), SiLU(),
                                      WrappedConv2d(model_channels, out_channels, 3, padding=1, zero_init=True)])
        if recompute:
            self.set_recompute()
        self.set_compute_dtype(self.dtype)

    def set_compute_dtype(self, dtype):
        """fp16 (or bf16) convs and matmuls from here on; GroupNorm, LayerNorm, softmax (and q.k^T with
        upcast_attention) stay fp32 inside their cells. Training's amp_level calls this after construction."""
        self.dtype = dtype
        set_compute_dtype(self, dtype)

    def set_recompute(self):
        """Gradient checkpointing: recompute ResBlocks and transformers during backward instead of storing them."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, (ResBlock, TransformerBlock)):
                cell.recompute()

    def construct(self, x, timesteps, context=None, control=None):
        """``control``: None, or the residuals of :class:`ldm.models.controlnet.ControlNetModel` (already scaled,
        summed over ControlNets): one per skip connection in ``input_blocks`` order, then the middle block's;
        each is added to its skip (and the last to the middle block's output), as diffusers'
        ``down_block_additional_residuals`` / ``mid_block_additional_residual``."""
        if timesteps.ndim == 0 or (timesteps.shape[0] == 1 and x.shape[0] > 1):
            timesteps = ops.broadcast_to(timesteps.reshape(1), (x.shape[0],))
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).astype(self.dtype))
        h = x.astype(self.dtype)
        if context is not None:
            context = context.astype(self.dtype)
        skips = ()
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips = skips + (h,)
        h = self.middle_block(h, emb, context)
        if control is not None:
            h = h + control[-1].astype(h.dtype)
        n = len(skips)
        for i, block in enumerate(self.output_blocks):
            skip = skips[n - 1 - i]
            if control is not None:
                skip = skip + control[n - 1 - i].astype(skip.dtype)
            h = ops.cat((h, skip), axis=1)
            h = block(h, emb, context)
        return self.out(h).astype(ms.float32)
