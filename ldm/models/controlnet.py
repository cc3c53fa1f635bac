"""ControlNet (Zhang et al. 2023) for the SD UNet: a copy of the UNet's encoder half and middle block that also
reads a control image (edges, depth, pose ...) and returns one residual per skip connection plus one for the
middle block; :class:`ldm.models.unet.UNetModel` adds them (``unet(x, t, context, control=residuals)``).

Structure and parameter names are lllyasviel's ``cldm.ControlNet`` as MindONE names it (``<conv>.conv.weight``,
norms ``gamma``/``beta``):

    time_embed.{0,2}                  the copy's own timestep MLP
    input_hint_block.{0,2,...}.conv   the hint encoder: 3x3 convs with SiLU between them, a stride-2 conv at every
                                      change of width (16 -> 32 -> 96 -> 256: image size / 8 = latent size), then a
                                      zero-initialised conv to the UNet's width, added after ``input_blocks.0``
    input_blocks.*, middle_block.*    the UNet's (same names and shapes, built by the UNet's own builders)
    zero_convs.{i}.conv               a zero-initialised 1x1 conv per skip connection
    middle_block_out.conv             a zero-initialised 1x1 conv of the middle block's output

The other layouts (lllyasviel ``.pth``, diffusers ``ControlNetModel``) are name tables in
:mod:`ldm.convert.names_controlnet`; reading and writing files is :mod:`ldm.convert.controlnet`.
:func:`build_controlnet_from_unet` starts a ControlNet for training (encoder weights copied, zero convs zero),
:func:`control_scales` is diffusers' conditioning scale / guess-mode rule.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from ldm.models.attention_ops import settings_from_keys
from ldm.models.layers import SiLU, WrappedConv2d, dense, set_compute_dtype, timestep_embedding
from ldm.models.unet import ResBlock, TransformerBlock, encoder_blocks, middle_block, transformer_factory

HINT_BLOCK_CHANNELS = (16, 32, 96, 256)      # lllyasviel's and diffusers' conditioning_embedding_out_channels


def hint_block_layout(hint_channels, hint_block_channels, model_channels):
    """[(in, out, stride)] of the hint encoder's convs in order (a SiLU follows every one but the last)."""
    widths = [int(c) for c in hint_block_channels]
    convs = [(int(hint_channels), widths[0], 1)]
    for a, b in zip(widths[:-1], widths[1:]):
        convs += [(a, a, 1), (a, b, 2)]
    return convs + [(widths[-1], int(model_channels), 1)]


def control_scales(num_residuals, conditioning_scale=1.0, guess_mode=False):
    """float64 (num_residuals,) weights of the residuals (skips in order, the middle block's last):
    ``conditioning_scale`` everywhere, or in guess mode diffusers' ``logspace(-1, 0)`` ramp times it (0.1 for the
    first skip up to 1 for the middle block; MindONE/lllyasviel use 0.825 ** (12 - i), within 0.6% of it)."""
    if guess_mode:
        return np.logspace(-1.0, 0.0, int(num_residuals)) * float(conditioning_scale)
    return np.full(int(num_residuals), float(conditioning_scale))


class ControlNetModel(nn.Cell):
    """``construct(x (N,C,h,w), timesteps (N,), context (N,L,D), hint (N,hint_channels,H,W)) -> tuple`` of
    ``num_residuals`` unscaled residuals (one per ``input_blocks`` entry, then the middle block's), with H = h *
    ``latent_factor``. The keys are the UNet's (:class:`ldm.models.unet.UNetModel`; a ControlNet YAML holds the
    same ``unet_config`` params as its base) plus ``hint_channels`` (3: an RGB control image in [0, 1]),
    ``hint_block_channels`` (diffusers' ``conditioning_embedding_out_channels``), ``global_pool_conditions``
    (residuals averaged over space: diffusers' shuffle ControlNets) and ``channel_order`` ("rgb"; "bgr" flips the
    control image's channels first, diffusers' ``controlnet_conditioning_channel_order``). MindONE's keys that do
    not change the network (image_size, legacy, dims, ...) are accepted and ignored.
    """

    def __init__(self, in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=2,
                 attention_resolutions=(4, 2, 1), channel_mult=(1, 2, 4, 4), num_heads=-1, num_head_channels=-1,
                 transformer_depth=1, context_dim=None, use_linear_in_transformer=False, use_checkpoint=False,
                 use_recompute=None, use_fp16=False, upcast_attention=False, hint_block_channels=HINT_BLOCK_CHANNELS,
                 global_pool_conditions=False, channel_order="rgb", conv_resample=True, use_spatial_transformer=True,
                 use_scale_shift_norm=False, resblock_updown=False, attention=None, attention_chunk=None,
                 enable_flash_attention=None, **ignored):
        super().__init__()
        if use_scale_shift_norm or resblock_updown or not conv_resample or not use_spatial_transformer:
            raise ValueError("only the Stable Diffusion ControlNet layout is supported: use_scale_shift_norm=False, "
                             "resblock_updown=False, conv_resample=True, use_spatial_transformer=True")
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("set either num_heads or num_head_channels")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if isinstance(context_dim, (list, tuple)):
            context_dim = context_dim[0]
        self.attention_settings = settings_from_keys(attention, attention_chunk, enable_flash_attention,
                                                     "control_stage_config attention")
        self.in_channels, self.model_channels, self.hint_channels = in_channels, model_channels, int(hint_channels)
        self.context_dim = context_dim
        self.global_pool_conditions = bool(global_pool_conditions)
        self.channel_order = channel_order
        self.latent_factor = 2 ** (len(hint_block_channels) - 1)
        self.dtype = ms.float16 if use_fp16 else ms.float32
        time_embed_dim = model_channels * 4
        self.time_embed = nn.SequentialCell([dense(model_channels, time_embed_dim), SiLU(),
                                             dense(time_embed_dim, time_embed_dim)])
        layers = []
        convs = hint_block_layout(hint_channels, hint_block_channels, model_channels)
        for k, (cin, cout, stride) in enumerate(convs):
            last = k == len(convs) - 1
            layers.append(WrappedConv2d(cin, cout, 3, stride=stride, padding=1, zero_init=last))
            if not last:
                layers.append(SiLU())
        self.input_hint_block = nn.SequentialCell(layers)
        transformer = transformer_factory(num_heads, num_head_channels, transformer_depth, context_dim,
                                          use_linear_in_transformer, upcast_attention, self.attention_settings)
        blocks, skip_channels = encoder_blocks(in_channels, model_channels, channel_mult, num_res_blocks,
                                               attention_resolutions, time_embed_dim, transformer)
        self.input_blocks = nn.CellList(blocks)
        self.zero_convs = nn.CellList([WrappedConv2d(c, c, 1, zero_init=True) for c in skip_channels])
        self.middle_block = middle_block(skip_channels[-1], time_embed_dim, transformer)
        self.middle_block_out = WrappedConv2d(skip_channels[-1], skip_channels[-1], 1, zero_init=True)
        self.num_residuals = len(skip_channels) + 1
        if use_checkpoint if use_recompute is None else use_recompute:
            for _, cell in self.cells_and_names():
                if isinstance(cell, (ResBlock, TransformerBlock)):
                    cell.recompute()
        self.set_compute_dtype(self.dtype)

    def set_compute_dtype(self, dtype):
        """fp16 (or bf16) convs and matmuls; norms and softmax stay fp32 (as the UNet's)."""
        self.dtype = dtype
        set_compute_dtype(self, dtype)

    def construct(self, x, timesteps, context, hint):
        if timesteps.ndim == 0 or (timesteps.shape[0] == 1 and x.shape[0] > 1):
            timesteps = ops.broadcast_to(timesteps.reshape(1), (x.shape[0],))
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).astype(self.dtype))
        if self.channel_order == "bgr":
            hint = ops.flip(hint, (1,))
        guide = self.input_hint_block(hint.astype(self.dtype))
        h = x.astype(self.dtype)
        if context is not None:
            context = context.astype(self.dtype)
        outs = ()
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context)
            if i == 0:
                h = h + guide
            outs = outs + (self.zero_convs[i](h),)
        h = self.middle_block(h, emb, context)
        outs = outs + (self.middle_block_out(h),)
        if self.global_pool_conditions:
            pooled = ()
            for out in outs:
                pooled = pooled + (out.mean(axis=(2, 3), keep_dims=True),)
            outs = pooled
        return outs


def controlnet_params_from_unet(unet_params, hint_channels=3, hint_block_channels=HINT_BLOCK_CHANNELS):
    """ControlNet params for a base UNet's params (a YAML ``unet_config.params``): the same encoder, plus the
    hint encoder's keys. UNet-only keys (out_channels, ...) are dropped."""
    keep = ("in_channels", "model_channels", "num_res_blocks", "attention_resolutions", "channel_mult",
            "num_heads", "num_head_channels", "transformer_depth", "context_dim", "use_linear_in_transformer",
            "use_checkpoint", "use_recompute", "use_fp16", "upcast_attention", "attention", "attention_chunk",
            "enable_flash_attention")
    params = {k: v for k, v in dict(unet_params or {}).items() if k in keep}
    params.update(hint_channels=int(hint_channels), hint_block_channels=[int(c) for c in hint_block_channels])
    return params


def build_controlnet_from_unet(unet, unet_params, hint_channels=3, hint_block_channels=HINT_BLOCK_CHANNELS):
    """A new ControlNet for ``unet`` (built from ``unet_params``), the way ControlNet training starts: the
    encoder, middle block and time embedding copied from the UNet, every zero conv (and the hint encoder's last
    conv) zero, the rest of the hint encoder at its random initialisation; so its residuals are exactly 0 and
    the controlled UNet starts as the base model."""
    net = ControlNetModel(**controlnet_params_from_unet(unet_params, hint_channels, hint_block_channels))
    source = {p.name: p for p in unet.get_parameters()}
    anchor = "time_embed.0.weight"     # the UNet's own names may carry a prefix (model.diffusion_model.)
    prefix = next((n[:-len(anchor)] for n in source if n.endswith(anchor)), "")
    copied = 0
    for param in net.get_parameters():
        if param.name.startswith(("time_embed.", "input_blocks.", "middle_block.")):
            match = source.get(prefix + param.name)
            if match is None or tuple(match.shape) != tuple(param.shape):
                raise ValueError(f"the UNet has no parameter matching the ControlNet's {param.name}")
            param.set_data(ms.Tensor(match.asnumpy(), dtype=param.dtype))
            copied += 1
    if not copied:
        raise ValueError("no UNet parameter was copied: is this the UNet the params describe?")
    return net


__all__ = ["ControlNetModel", "HINT_BLOCK_CHANNELS", "build_controlnet_from_unet", "control_scales",
           "controlnet_params_from_unet", "hint_block_layout"]
