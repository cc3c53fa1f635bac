"""UNet parameter names in three layouts, derived from the UNet's config params (as data, both directions).

Rows are ``(mindone, stability, diffusers)`` names without the ``model.diffusion_model.`` / ``unet.``
prefixes, in the UNet's construction order:

- mindone: our names (MindONE checkpoints), e.g. ``input_blocks.1.0.in_layers_conv.conv.weight``
- stability: CompVis/Stability ``.ckpt`` names, e.g. ``input_blocks.1.0.in_layers.2.weight``
- diffusers: ``UNet2DConditionModel`` names, e.g. ``down_blocks.0.resnets.0.conv1.weight``

Shapes agree in all three except that a 1x1 conv may be stored as a Linear (reshape (C,C,1,1) <-> (C,C)).
"""

WB = (("weight", "weight", "weight"), ("bias", "bias", "bias"))
NORM = (("gamma", "weight", "weight"), ("beta", "bias", "bias"))


def _leaf(prefixes, leaf_rows):
    """Join per-layout prefixes with leaf names: one row per leaf."""
    return [tuple(p + "." + leaf for p, leaf in zip(prefixes, leaves)) for leaves in leaf_rows]


def _sub(prefixes, names):
    """Extend each layout's prefix by its own sub-name."""
    return tuple(p + "." + n for p, n in zip(prefixes, names))


def resblock_rows(prefixes, has_skip):
    rows = []
    rows += _leaf(_sub(prefixes, ("in_layers_norm", "in_layers.0", "norm1")), NORM)
    rows += _leaf(_sub(prefixes, ("in_layers_conv.conv", "in_layers.2", "conv1")), WB)
    rows += _leaf(_sub(prefixes, ("emb_layers.1", "emb_layers.1", "time_emb_proj")), WB)
    rows += _leaf(_sub(prefixes, ("out_layers_norm", "out_layers.0", "norm2")), NORM)
    rows += _leaf(_sub(prefixes, ("out_layers_conv.conv", "out_layers.3", "conv2")), WB)
    if has_skip:
        rows += _leaf(_sub(prefixes, ("skip_connection.conv", "skip_connection", "conv_shortcut")), WB)
    return rows


def transformer_rows(prefixes, depth):
    """SpatialTransformer (LDM) == Transformer2DModel (diffusers): same names but norms gamma/beta."""
    same = lambda name: (name, name, name)  # noqa: E731
    rows = _leaf(_sub(prefixes, same("norm")), NORM)
    rows += _leaf(_sub(prefixes, same("proj_in")), WB)
    for d in range(depth):
        block = _sub(prefixes, same(f"transformer_blocks.{d}"))
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v"):
                rows += _leaf(_sub(block, same(f"{attn}.{proj}")), WB[:1])
            rows += _leaf(_sub(block, same(f"{attn}.to_out.0")), WB)
        rows += _leaf(_sub(block, same("ff.net.0.proj")), WB)
        rows += _leaf(_sub(block, same("ff.net.2")), WB)
        for norm in ("norm1", "norm2", "norm3"):
            rows += _leaf(_sub(block, same(norm)), NORM)
    rows += _leaf(_sub(prefixes, same("proj_out")), WB)
    return rows


def unet_name_table(unet_params):
    """All UNet parameter names for a UNet built from ``unet_params`` (the YAML ``unet_config.params``)."""
    p = dict(unet_params or {})
    p = p.get("params", p) if "model_channels" not in p and "params" in p else p
    mc = int(p.get("model_channels", 320))
    mult = list(p.get("channel_mult", (1, 2, 4, 4)))
    nrb = int(p.get("num_res_blocks", 2))
    attn_res = list(p.get("attention_resolutions", (4, 2, 1)))
    depth = int(p.get("transformer_depth", 1))

    rows = _leaf(("time_embed.0", "time_embed.0", "time_embedding.linear_1"), WB)
    rows += _leaf(("time_embed.2", "time_embed.2", "time_embedding.linear_2"), WB)
    rows += _leaf(("input_blocks.0.0.conv", "input_blocks.0.0", "conv_in"), WB)

    ch, ds, k = mc, 1, 1
    skip_channels = [mc]
    for level, m in enumerate(mult):
        for j in range(nrb):
            out = m * mc
            mine = f"input_blocks.{k}"
            rows += resblock_rows((mine + ".0", mine + ".0", f"down_blocks.{level}.resnets.{j}"), ch != out)
            ch = out
            if ds in attn_res:
                rows += transformer_rows((mine + ".1", mine + ".1", f"down_blocks.{level}.attentions.{j}"), depth)
            skip_channels.append(ch)
            k += 1
        if level != len(mult) - 1:
            name = f"input_blocks.{k}.0.op"
            rows += _leaf((name + ".conv", name, f"down_blocks.{level}.downsamplers.0.conv"), WB)
            skip_channels.append(ch)
            ds *= 2
            k += 1

    rows += resblock_rows(("middle_block.0",) * 2 + ("mid_block.resnets.0",), False)
    rows += transformer_rows(("middle_block.1",) * 2 + ("mid_block.attentions.0",), depth)
    rows += resblock_rows(("middle_block.2",) * 2 + ("mid_block.resnets.1",), False)

    k = 0
    for up_index, level in enumerate(reversed(range(len(mult)))):
        for j in range(nrb + 1):
            inp = ch + skip_channels.pop()
            out = mc * mult[level]
            mine = f"output_blocks.{k}"
            rows += resblock_rows((mine + ".0", mine + ".0", f"up_blocks.{up_index}.resnets.{j}"), inp != out)
            ch = out
            sub = 1
            if ds in attn_res:
                rows += transformer_rows((mine + ".1", mine + ".1", f"up_blocks.{up_index}.attentions.{j}"), depth)
                sub = 2
            if level and j == nrb:
                name = f"{mine}.{sub}.conv"
                rows += _leaf((name + ".conv", name, f"up_blocks.{up_index}.upsamplers.0.conv"), WB)
                ds //= 2
            k += 1

    rows += _leaf(("out.0", "out.0", "conv_norm_out"), NORM)
    rows += _leaf(("out.2.conv", "out.2", "conv_out"), WB)
    return rows
