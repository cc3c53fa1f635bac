"""ControlNet weight files in, :class:`ldm.models.controlnet.ControlNetModel` out (and our own files out again).

What is read (formats sniffed by :mod:`ldm.convert.readers`: torch pickles through the restricted unpickler,
``.safetensors`` through our strict parser, MindSpore ``.ckpt`` in pure Python; no torch):

* a diffusers ``ControlNetModel`` folder (``config.json`` + ``diffusion_pytorch_model[.fp16].safetensors|.bin``,
  or sharded), or a diffusers pipeline folder with a ``controlnet/`` sub-folder; the architecture comes from its
  ``config.json``;
* lllyasviel's files: ``control_v11*_sd15_*.pth`` / ``.safetensors`` (``control_model.*``), the full
  ``control_sd15_*.pth`` (base + ``control_model.*``: only the ControlNet is taken), bare ``zero_convs.*`` files;
* MindONE's cldm ``.ckpt`` (``control_model.*`` or ``model.diffusion_model.controlnet.*``, MindSpore names) and
  the files :func:`save_controlnet` writes (``control_model.*``, MindONE names).

For single files the architecture is the YAML's ``control_stage_config`` (MindONE's key, under ``model.params``
or ``model.params.unet_config.params``) or else the base UNet's, with the hint encoder's sizes read from the
file. A ControlNet made for another base (its text context width or UNet width differs from the base model's,
e.g. an SD 1.5 ControlNet on SD 2.1) is one UserError line naming both, before anything is built.
"""
import json
import os

from ldm.convert.names_controlnet import (PREFIXES, controlnet_name_table, detect_controlnet_layout,
                                          split_prefix)
from ldm.convert.readers import read_weight_file
from ldm.errors import CheckpointError, UserError
from ldm.util import load_config, model_params, part_params

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
COLUMNS = {"mindone": 0, "lllyasviel": 1, "diffusers": 2}
SAVE_PREFIX = "control_model."
# text context width -> the base family it belongs to (for the "another base" message)
FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


# ------------------------------------------------------------------ reading
def _folder_files(folder):
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return [path]
        index = path + ".index.json"
        if os.path.isfile(index):
            shards = sorted(set(_json(index).get("weight_map", {}).values()))
            return [os.path.join(folder, s) for s in shards]
    raise CheckpointError(f"no ControlNet weights in {folder} (looked for {', '.join(WEIGHT_FILES)})")


def _json(path):
    from ldm.io.text import read_utf8
    try:
        value = json.loads(read_utf8(path, "diffusers config"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def read_controlnet(path):
    """(layout, prefix-free name -> array, diffusers config dict or None) of a ControlNet file or folder."""
    if not os.path.exists(path):
        raise UserError(f"ControlNet not found: {path}")
    config = None
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "controlnet", "config.json")):
            path = os.path.join(path, "controlnet")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CheckpointError(f"{path} is a folder without config.json: give a diffusers ControlNetModel "
                                  "folder or a weight file")
        config = _json(os.path.join(path, "config.json"))
        state = {}
        for part in _folder_files(path):
            state.update(read_weight_file(part))
    else:
        state = read_weight_file(path)
    prefix, names = split_prefix(state)
    layout = detect_controlnet_layout(names)
    if layout is None:
        raise CheckpointError(f"{path} holds no ControlNet weights (looked for {', '.join(p + '*' for p in PREFIXES)}"
                              ", or zero_convs.* / controlnet_down_blocks.* names)")
    return layout, names, config


# ------------------------------------------------------------------ architecture
def yaml_controlnet_params(config):
    """The ``control_stage_config`` params of a model YAML (path or dict), or None: MindONE keeps them under
    ``model.params`` (ControlLDM) or ``model.params.unet_config.params`` (its later ControlnetUnetModel)."""
    if config is None:
        return None
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    for holder in (model_params(cfg), part_params(cfg, "unet_config")):
        section = holder.get("control_stage_config")
        if isinstance(section, dict):
            return dict(section.get("params") or {})
    return None


def params_from_diffusers(cfg, where="config.json"):
    """ControlNet params (our keys) from a diffusers ControlNetModel ``config.json``."""
    from ldm.convert.diffusers import _unet_params
    from ldm.models.controlnet import controlnet_params_from_unet
    if cfg.get("addition_embed_type") or cfg.get("class_embed_type"):
        extra = cfg.get("addition_embed_type") or cfg.get("class_embed_type")
        raise CheckpointError(f"{where}: a ControlNet with extra embeddings ({extra}, e.g. SDXL's) is not "
                              "supported; use an SD 1.x/2.x one")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise CheckpointError(f"{where}: unsupported mid_block_type {cfg.get('mid_block_type')!r}")
    try:
        down = list(cfg["down_block_types"])
        mirrored = dict(cfg, up_block_types=[t.replace("Down", "Up") for t in down][::-1],
                        out_channels=cfg.get("in_channels", 4))
        unet = _unet_params(mirrored)
    except KeyError as exc:
        raise CheckpointError(f"{where} lacks the key {exc}") from exc
    params = controlnet_params_from_unet(unet, cfg.get("conditioning_channels", 3),
                                         cfg.get("conditioning_embedding_out_channels") or (16, 32, 96, 256))
    params.update(global_pool_conditions=bool(cfg.get("global_pool_conditions", False)),
                  channel_order=cfg.get("controlnet_conditioning_channel_order", "rgb"))
    return params


def _hint_sizes(names, layout):
    """(hint_channels, hint_block_channels) read from a file's hint-encoder weights."""
    if layout == "diffusers":
        first = names.get("controlnet_cond_embedding.conv_in.weight")
        blocks = sorted((int(k.split(".")[2]), v) for k, v in names.items()
                        if k.startswith("controlnet_cond_embedding.blocks.") and k.endswith(".weight"))
        outs = [first] + [v for _, v in blocks]
    else:
        leaf = ".conv.weight" if layout == "mindone" else ".weight"
        depth = leaf.count(".") + 1                 # input_hint_block.<i><leaf>
        convs = sorted((int(k.split(".")[1]), v) for k, v in names.items()
                       if k.startswith("input_hint_block.") and k.endswith(leaf) and k.count(".") == depth)
        outs = [v for _, v in convs][:-1]          # the last conv maps to the UNet's width
    if not outs or outs[0] is None:
        raise CheckpointError("the ControlNet file has no hint encoder (input_hint_block / controlnet_cond_embedding)")
    return int(outs[0].shape[1]), [int(outs[0].shape[0])] + [int(v.shape[0]) for v in outs[2::2]]


def _family(width):
    return FAMILIES.get(int(width), f"a {width}-wide text encoder")


def check_base(names, layout, base_unet, path):
    """Refuse a ControlNet made for another base model in one line (text context width, UNet width)."""
    time = names.get("time_embedding.linear_1.weight" if layout == "diffusers" else "time_embed.0.weight")
    context = next((v for k, v in sorted(names.items()) if k.endswith("attn2.to_k.weight")), None)
    want_ctx = base_unet.get("context_dim")
    want_ctx = want_ctx[0] if isinstance(want_ctx, (list, tuple)) else want_ctx
    if context is not None and want_ctx is not None and int(context.shape[-1]) != int(want_ctx):
        raise UserError(f"ControlNet {path} was made for {_family(context.shape[-1])} (text context width "
                        f"{context.shape[-1]}); the base model is {_family(want_ctx)} (width {want_ctx}): use a "
                        "ControlNet trained for this base")
    want_mc = base_unet.get("model_channels")
    if time is not None and want_mc is not None and int(time.shape[-1]) != int(want_mc):
        raise UserError(f"ControlNet {path} has UNet width {time.shape[-1]}; the base model's UNet has "
                        f"{want_mc}: use a ControlNet trained for this base")


def controlnet_params(path_layout_names_config, base_config):
    """The ControlNet architecture for a file read by :func:`read_controlnet` on the base model ``base_config``."""
    layout, names, dcfg = path_layout_names_config
    if dcfg is not None:
        return params_from_diffusers(dcfg)
    from ldm.models.controlnet import controlnet_params_from_unet
    params = yaml_controlnet_params(base_config)
    if params is None:
        hint, widths = _hint_sizes(names, layout)
        params = controlnet_params_from_unet(part_params(base_config, "unet_config"), hint, widths)
    return params


# ------------------------------------------------------------------ converting and loading
def convert_controlnet(names, layout, params):
    """Prefix-free names of ``layout`` -> (our names -> array, unexpected source names)."""
    if layout == "mindone":
        ours = {row[0] for row in controlnet_name_table(params)}
        return dict(names), sorted(k for k in names if k not in ours)
    column = COLUMNS[layout]
    out, used = {}, set()
    for row in controlnet_name_table(params):
        if row[column] in names:
            out[row[0]] = names[row[column]]
            used.add(row[column])
    return out, sorted(k for k in names if k not in used)


def load_controlnet(path, base_config, params=None):
    """A ControlNetModel with the weights of ``path`` (any format above), checked against the base model
    ``base_config`` (YAML path or dict). ``params`` overrides the architecture. Every parameter must load
    (strict); one CheckpointError lists what is missing, unexpected or of another shape."""
    from mindspore.nn.utils import no_init_parameters

    from ldm.convert.checkpoint import load_params_into
    from ldm.models.controlnet import ControlNetModel
    cfg = load_config(base_config) if isinstance(base_config, (str, os.PathLike)) else base_config
    read = read_controlnet(path)
    layout, names, _ = read
    check_base(names, layout, part_params(cfg, "unet_config"), path)
    if params is None:
        params = controlnet_params(read, cfg)
    state, unexpected = convert_controlnet(names, layout, params)
    try:
        with no_init_parameters():
            net = ControlNetModel(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"ControlNet {path}: unsupported architecture ({exc})") from exc
    load_params_into(net, state, strict=True, unexpected=unexpected, source=path)
    net.set_train(False)
    net.source_path, net.source_layout, net.source_params = path, layout, dict(params)
    return net


def save_controlnet(net, path, prefix=SAVE_PREFIX):
    """Write a ControlNet as a MindSpore .ckpt with MindONE names under ``prefix`` (``control_model.``, as
    MindONE's ControlLDM and lllyasviel's files; ``load_controlnet`` reads it back). Atomic, with CRC."""
    from ldm.io.ms_checkpoint import atomic_save
    params = list(net.get_parameters())
    anchor = "time_embed.0.weight"          # a pipeline holds its ControlNets under 0., 1., ...: drop that
    own = next((p.name[:-len(anchor)] for p in params if p.name.endswith(anchor)), "")
    return atomic_save([{"name": prefix + p.name[len(own):], "data": p} for p in params], path)


__all__ = ["read_controlnet", "load_controlnet", "save_controlnet", "convert_controlnet", "controlnet_params",
           "params_from_diffusers", "yaml_controlnet_params", "check_base"]
