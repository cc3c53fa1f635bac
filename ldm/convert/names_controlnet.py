"""ControlNet parameter names in three layouts, derived from the ControlNet's params (as data, both directions).

Rows are ``(mindone, lllyasviel, diffusers)`` names without a file's prefix, in construction order:

- mindone: our names (:class:`ldm.models.controlnet.ControlNetModel`, MindONE's cldm), e.g.
  ``zero_convs.0.conv.weight``, ``input_hint_block.2.conv.weight``, ``input_blocks.1.0.in_layers_conv.conv.weight``
- lllyasviel: ``cldm.ControlNet`` in PyTorch (``control_sd15_*.pth``, ``control_v11*.pth``), e.g.
  ``zero_convs.0.0.weight``, ``input_hint_block.2.weight``, ``input_blocks.1.0.in_layers.2.weight``
- diffusers: ``ControlNetModel``, e.g. ``controlnet_down_blocks.0.weight``,
  ``controlnet_cond_embedding.blocks.0.weight``, ``down_blocks.0.resnets.0.conv1.weight``

The time embedding, ``input_blocks`` and ``middle_block`` rows are the UNet's own (:mod:`ldm.convert.names_unet`):
a ControlNet copies the UNet's encoder, and diffusers' ControlNetModel names it as UNet2DConditionModel does.
Prefixes seen in files: none, ``control_model.`` (lllyasviel's full cldm checkpoints and ControlNet 1.1 files;
MindONE's ControlLDM) and ``model.diffusion_model.controlnet.`` (MindONE's later ControlnetUnetModel).
"""
from ldm.convert.names_unet import WB, _leaf, unet_name_table

PREFIXES = ("model.diffusion_model.controlnet.", "control_model.")
ENCODER = ("time_embed.", "input_blocks.", "middle_block.")


def _int_list(value, default):
    return [int(v) for v in (default if value is None else value)]


def controlnet_name_table(params):
    """All ControlNet parameter names for a ControlNet built from ``params`` (a YAML ``control_stage_config``'s
    params, or :func:`ldm.models.controlnet.controlnet_params_from_unet`)."""
    p = dict(params or {})
    rows = [row for row in unet_name_table(p) if row[0].startswith(ENCODER)]
    if p.get("hint_block_channels") is None:
        from ldm.models.controlnet import HINT_BLOCK_CHANNELS
        p["hint_block_channels"] = HINT_BLOCK_CHANNELS
    widths = _int_list(p["hint_block_channels"], ())
    n_hint = 2 * len(widths)              # conv_in, two per change of width, conv_out
    for k in range(n_hint):
        ours = f"input_hint_block.{2 * k}"
        theirs = "controlnet_cond_embedding." + ("conv_in" if k == 0 else "conv_out" if k == n_hint - 1
                                                 else f"blocks.{k - 1}")
        rows += _leaf((ours + ".conv", ours, theirs), WB)
    levels = len(_int_list(p.get("channel_mult"), (1, 2, 4, 4)))
    n_skips = 1 + levels * int(p.get("num_res_blocks", 2)) + levels - 1     # input_blocks: conv, blocks, downsamples
    for i in range(n_skips):
        rows += _leaf((f"zero_convs.{i}.conv", f"zero_convs.{i}.0", f"controlnet_down_blocks.{i}"), WB)
    rows += _leaf(("middle_block_out.conv", "middle_block_out.0", "controlnet_mid_block"), WB)
    return rows


def split_prefix(state):
    """(prefix, names without it) of the ControlNet tensors in a flat state dict: the first of PREFIXES under
    which a ControlNet name is found, else '' (a file of bare ControlNet names)."""
    for prefix in PREFIXES:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            return prefix, part
    return "", dict(state)


def detect_controlnet_layout(names):
    """'mindone' | 'lllyasviel' | 'diffusers' from prefix-free ControlNet names; None when none fits."""
    names = set(names)
    if "controlnet_cond_embedding.conv_in.weight" in names or "controlnet_mid_block.weight" in names:
        return "diffusers"
    if "middle_block_out.conv.weight" in names or "zero_convs.0.conv.weight" in names:
        return "mindone"
    if "middle_block_out.0.weight" in names or "zero_convs.0.0.weight" in names:
        return "lllyasviel"
    return None


def without_controlnet(state):
    """A flat state dict minus every ControlNet tensor of a combined base + ControlNet checkpoint (lllyasviel's
    full ``control_sd15_*.pth``, MindONE's cldm ``.ckpt``), so the base model loads from the same file."""
    if not any(k.startswith(PREFIXES) for k in state):
        return state
    return {k: v for k, v in state.items() if not k.startswith(PREFIXES)}
