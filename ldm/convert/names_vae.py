"""VAE (AutoencoderKL) parameter names in three layouts, derived from the VAE's ``ddconfig``.

Rows are ``(mindone, stability, diffusers)`` names without the ``first_stage_model.`` / ``vae.`` prefixes.
MindONE = Stability except GroupNorm ``gamma/beta``. diffusers numbers decoder levels the other way
round (``up_blocks.0`` is the lowest resolution = Stability's ``up.{L-1}``) and stores the mid-block
attention's q/k/v/proj_out as Linear layers (shape (C, C) instead of (C, C, 1, 1)).
"""
from ldm.convert.names_unet import NORM, WB, _leaf, _sub


def resnet_rows(prefixes, has_shortcut):
    rows = []
    for ours, theirs in (("norm1", NORM), ("conv1", WB), ("norm2", NORM), ("conv2", WB)):
        rows += _leaf(_sub(prefixes, (ours, ours, ours)), theirs)
    if has_shortcut:
        rows += _leaf(_sub(prefixes, ("nin_shortcut", "nin_shortcut", "conv_shortcut")), WB)
    return rows


def mid_rows(mine, diffusers):
    rows = resnet_rows((mine + ".block_1", mine + ".block_1", diffusers + ".resnets.0"), False)
    attn = (mine + ".attn_1", mine + ".attn_1", diffusers + ".attentions.0")
    rows += _leaf(_sub(attn, ("norm", "norm", "group_norm")), NORM)
    for ours, theirs in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        rows += _leaf(_sub(attn, (ours, ours, theirs)), WB)
    rows += resnet_rows((mine + ".block_2", mine + ".block_2", diffusers + ".resnets.1"), False)
    return rows


def vae_name_table(ddconfig):
    """All VAE names for ``ddconfig`` (the YAML ``first_stage_config.params.ddconfig``, or its ``params``)."""
    cfg = dict(ddconfig or {})
    cfg = cfg.get("ddconfig", cfg)
    ch = int(cfg.get("ch", 128))
    mult = list(cfg.get("ch_mult", (1, 2, 4, 4)))
    nrb = int(cfg.get("num_res_blocks", 2))
    levels = len(mult)

    rows = _leaf(("encoder.conv_in",) * 3, WB)
    block_in = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            mine = f"encoder.down.{i}.block.{j}"
            rows += resnet_rows((mine, mine, f"encoder.down_blocks.{i}.resnets.{j}"), block_in != ch * m)
            block_in = ch * m
        if i != levels - 1:
            mine = f"encoder.down.{i}.downsample.conv"
            rows += _leaf((mine, mine, f"encoder.down_blocks.{i}.downsamplers.0.conv"), WB)
    rows += mid_rows("encoder.mid", "encoder.mid_block")
    rows += _leaf(("encoder.norm_out", "encoder.norm_out", "encoder.conv_norm_out"), NORM)
    rows += _leaf(("encoder.conv_out",) * 3, WB)

    rows += _leaf(("decoder.conv_in",) * 3, WB)
    rows += mid_rows("decoder.mid", "decoder.mid_block")
    block_in = ch * mult[-1]
    for i in reversed(range(levels)):
        up = levels - 1 - i
        for j in range(nrb + 1):
            mine = f"decoder.up.{i}.block.{j}"
            rows += resnet_rows((mine, mine, f"decoder.up_blocks.{up}.resnets.{j}"), block_in != ch * mult[i])
            block_in = ch * mult[i]
        if i != 0:
            mine = f"decoder.up.{i}.upsample.conv"
            rows += _leaf((mine, mine, f"decoder.up_blocks.{up}.upsamplers.0.conv"), WB)
    rows += _leaf(("decoder.norm_out", "decoder.norm_out", "decoder.conv_norm_out"), NORM)
    rows += _leaf(("decoder.conv_out",) * 3, WB)

    rows += _leaf(("quant_conv",) * 3, WB)
    rows += _leaf(("post_quant_conv",) * 3, WB)
    return rows
