"""Read a diffusers Stable Diffusion folder: weights of unet/ vae/ text_encoder/, and the model YAML
derived from the folder's own config files (unet/vae/text_encoder config.json, scheduler config,
tokenizer files), so no hand-written config is needed.

Weights come back in one flat dict with ``unet.`` / ``vae.`` / ``text_encoder.`` prefixes, the
same "diffusers layout" our single-file export writes (see :mod:`ldm.convert.checkpoint`).
"""
import json
import os

from ldm.convert.readers import read_weight_file
from ldm.diffusion.prediction import normalize_prediction_type
from ldm.errors import CheckpointError

PARTS = {
    "unet": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
             "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
    "vae": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
    "text_encoder": ["model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"],
}


def is_diffusers_folder(path):
    return os.path.isdir(path) and all(os.path.isdir(os.path.join(path, p)) for p in PARTS)


def _read_json(path, required=True):
    if not os.path.isfile(path):
        if required:
            raise CheckpointError(f"diffusers folder is missing {path}")
        return {}
    from ldm.io.text import read_utf8
    text = read_utf8(path, "diffusers config")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def _part_files(folder, part):
    sub = os.path.join(folder, part)
    for name in PARTS[part]:
        if os.path.isfile(os.path.join(sub, name)):
            return [os.path.join(sub, name)]
        index = os.path.join(sub, name + ".index.json")
        if os.path.isfile(index):  # sharded weights
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            return [os.path.join(sub, s) for s in shards]
    raise CheckpointError(f"no weights in {sub} (looked for {', '.join(PARTS[part])})")


def read_diffusers_weights(folder):
    """Flat dict ``unet.* / vae.* / text_encoder.*`` of a diffusers folder's weights."""
    if not is_diffusers_folder(folder):
        raise CheckpointError(f"{folder} is not a diffusers folder (needs unet/, vae/ and text_encoder/)")
    state = {}
    for part in PARTS:
        for path in _part_files(folder, part):
            state.update({f"{part}.{k}": v for k, v in read_weight_file(path).items()})
    return state


# ------------------------------------------------------------------ config derivation
def _ratios(channels, what):
    base = channels[0]
    if any(c % base for c in channels):
        raise CheckpointError(f"{what} block_out_channels {channels} are not multiples of the first")
    return [c // base for c in channels]


def _unet_params(cfg):
    down, up = cfg["down_block_types"], cfg["up_block_types"]
    if [t.replace("Down", "Up") for t in down][::-1] != list(up):
        raise CheckpointError(f"unsupported UNet: up blocks {up} do not mirror down blocks {down}")
    if cfg.get("norm_num_groups", 32) != 32 or cfg.get("class_embed_type") or cfg.get("addition_embed_type"):
        raise CheckpointError("unsupported UNet config (norm_num_groups != 32 or extra embeddings)")
    channels = list(cfg["block_out_channels"])
    n = len(channels)
    heads = cfg.get("num_attention_heads") or cfg["attention_head_dim"]  # diffusers' naming quirk
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * n
    attn_blocks = [i for i, t in enumerate(down) if t.startswith("CrossAttn")]
    params = {
        "image_size": cfg.get("sample_size", 64), "in_channels": cfg["in_channels"],
        "out_channels": cfg["out_channels"], "model_channels": channels[0],
        "attention_resolutions": [2 ** i for i in attn_blocks], "num_res_blocks": cfg["layers_per_block"],
        "channel_mult": _ratios(channels, "UNet"), "use_spatial_transformer": True,
        "transformer_depth": cfg.get("transformer_layers_per_block", 1),
        "context_dim": cfg["cross_attention_dim"],
        "use_linear_in_transformer": bool(cfg.get("use_linear_projection", False)),
        "use_checkpoint": False, "legacy": False, "use_fp16": False,
        "upcast_attention": bool(cfg.get("upcast_attention", False)),
    }
    used = attn_blocks + [n - 1]  # the mid block attends with the last block's heads
    if len({heads[i] for i in used}) == 1:
        params["num_heads"], params["num_head_channels"] = int(heads[used[0]]), -1
    elif len({channels[i] // heads[i] for i in used}) == 1:
        params["num_heads"], params["num_head_channels"] = -1, channels[used[0]] // heads[used[0]]
    else:
        raise CheckpointError(f"attention heads {heads} fit neither a fixed head count nor a fixed head width")
    if isinstance(params["transformer_depth"], (list, tuple)):
        if len(set(params["transformer_depth"])) != 1:
            raise CheckpointError("per-block transformer_layers_per_block is not supported")
        params["transformer_depth"] = params["transformer_depth"][0]
    return params


def _vae_params(cfg):
    if cfg.get("norm_num_groups", 32) != 32:
        raise CheckpointError("unsupported VAE config (norm_num_groups != 32)")
    channels = list(cfg["block_out_channels"])
    z = cfg.get("latent_channels", 4)
    return {"embed_dim": z, "ddconfig": {
        "double_z": True, "z_channels": z, "resolution": cfg.get("sample_size", 256),
        "in_channels": cfg.get("in_channels", 3), "out_ch": cfg.get("out_channels", 3),
        "ch": channels[0], "ch_mult": _ratios(channels, "VAE"), "num_res_blocks": cfg["layers_per_block"],
        "attn_resolutions": [], "dropout": 0.0}}


def _pad_token(folder):
    """'eot' or an integer id, from tokenizer/special_tokens_map.json or tokenizer_config.json."""
    tok = os.path.join(folder, "tokenizer")
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        pad = _read_json(os.path.join(tok, name), required=False).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad == "<|endoftext|>":
            return "eot"
        if pad == "!":
            return 0
        if pad is not None:
            raise CheckpointError(f"unsupported tokenizer pad_token {pad!r} in {tok}/{name}")
    return None


def _text_params(cfg, pad_token):
    width = cfg["hidden_size"]
    if cfg.get("intermediate_size", 4 * width) != 4 * width:
        raise CheckpointError("text encoder intermediate_size must be 4 x hidden_size (CLIP)")
    act = cfg.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise CheckpointError(f"unsupported text encoder activation {act!r}")
    quick = act == "quick_gelu"
    return {"use_fp16": False, "tokenizer_name": "WordpieceTokenizer",
            "context_length": cfg.get("max_position_embeddings", 77), "vocab_size": cfg.get("vocab_size", 49408),
            "output_dim": cfg.get("projection_dim", width), "width": width,
            "layers": cfg["num_hidden_layers"], "heads": cfg["num_attention_heads"],
            "epsilon": float(cfg.get("layer_norm_eps", 1e-5)), "use_quick_gelu": quick,
            "pad_token": pad_token if pad_token is not None else ("eot" if quick else 0)}


def _scheduler(folder):
    sub = os.path.join(folder, "scheduler")
    cfg = _read_json(os.path.join(sub, "scheduler_config.json"), required=False)
    schedule = cfg.get("beta_schedule", "scaled_linear")
    if schedule != "scaled_linear":
        raise CheckpointError(f"unsupported beta_schedule {schedule!r} (Stable Diffusion uses scaled_linear)")
    pred = cfg.get("prediction_type", "epsilon")
    try:
        return cfg, normalize_prediction_type(pred)
    except ValueError as exc:
        raise CheckpointError(f"unsupported prediction_type {pred!r} in {sub}") from exc


def diffusers_model_config(folder):
    """Model YAML dict (our targets, MindONE-style params) describing a diffusers SD folder."""
    if not is_diffusers_folder(folder):
        raise CheckpointError(f"{folder} is not a diffusers folder (needs unet/, vae/ and text_encoder/)")
    unet = _read_json(os.path.join(folder, "unet", "config.json"))
    vae = _read_json(os.path.join(folder, "vae", "config.json"))
    text = _read_json(os.path.join(folder, "text_encoder", "config.json"))
    sched, prediction = _scheduler(folder)
    try:
        unet_params = _unet_params(unet)
        vae_params = _vae_params(vae)
        text_params = _text_params(text, _pad_token(folder))
    except KeyError as exc:
        raise CheckpointError(f"{folder}: a config.json lacks the key {exc}") from exc
    if unet_params["context_dim"] != text_params["width"]:
        raise CheckpointError(f"UNet cross_attention_dim {unet_params['context_dim']} != text width "
                              f"{text_params['width']}")
    params = {
        "linear_start": sched.get("beta_start", 0.00085), "linear_end": sched.get("beta_end", 0.012),
        "timesteps": sched.get("num_train_timesteps", 1000),
        "scale_factor": vae.get("scaling_factor", 0.18215), "use_fp16": False,
        "image_size": unet_params["image_size"], "channels": unet_params["in_channels"],
        "unet_config": {"target": "ldm.models.unet.UNetModel", "params": unet_params},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": vae_params},
        "cond_stage_config": {"target": "ldm.models.text_encoder.FrozenCLIPEmbedder", "params": text_params},
    }
    if sched.get("rescale_betas_zero_snr"):
        params["rescale_zero_snr"] = True
    return {"model": {"target": "ldm.models.latent_diffusion.LatentDiffusion",
                      "prediction_type": prediction, "params": params}}
