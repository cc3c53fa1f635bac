"""Write a diffusers Stable Diffusion folder from our weights and model YAML (the inverse of
:mod:`ldm.convert.diffusers`): unet/ vae/ text_encoder/ (config.json + safetensors), tokenizer/
(vocab.json, merges.txt, configs with the right pad token), scheduler/ (DDIM config with the YAML's
schedule and prediction type) and model_index.json, loadable by ``StableDiffusionPipeline.from_pretrained``.
"""
import gzip
import json
import os
import shutil

from ldm.convert.readers import write_safetensors
from ldm.diffusion.prediction import DIFFUSERS_NAMES
from ldm.diffusion.spec import resolve_spec
from ldm.errors import CheckpointError
from ldm.models.tokenizer import DEFAULT_VOCAB, NUM_MERGES, CLIPTokenizer
from ldm.util import model_params

DIFFUSERS_VERSION = "0.30.0"


def unet_config(unet, sample_size):
    channels = [unet["model_channels"] * m for m in unet["channel_mult"]]
    attn = set(unet.get("attention_resolutions", []))
    down = ["CrossAttnDownBlock2D" if 2 ** i in attn else "DownBlock2D" for i in range(len(channels))]
    heads = unet.get("num_heads", -1)
    head_channels = unet.get("num_head_channels", -1)
    head_dim = heads if heads not in (-1, None) else [c // head_channels for c in channels]
    return {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "attention_head_dim": head_dim, "block_out_channels": channels, "center_input_sample": False,
        "cross_attention_dim": unet["context_dim"], "down_block_types": down, "downsample_padding": 1,
        "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": unet.get("in_channels", 4),
        "layers_per_block": unet["num_res_blocks"], "mid_block_scale_factor": 1, "norm_eps": 1e-5,
        "norm_num_groups": 32, "out_channels": unet.get("out_channels", 4), "sample_size": sample_size,
        "transformer_layers_per_block": unet.get("transformer_depth", 1),
        "up_block_types": [t.replace("Down", "Up") for t in down][::-1],
        "upcast_attention": bool(unet.get("upcast_attention", False)),
        "use_linear_projection": bool(unet.get("use_linear_in_transformer", False)),
    }


def vae_config(first_stage, scale_factor):
    dd = first_stage["ddconfig"]
    channels = [dd["ch"] * m for m in dd["ch_mult"]]
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
        "block_out_channels": channels, "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "in_channels": dd.get("in_channels", 3), "latent_channels": dd.get("z_channels", 4),
        "layers_per_block": dd["num_res_blocks"], "norm_num_groups": 32, "out_channels": dd.get("out_ch", 3),
        "sample_size": dd.get("resolution", 256), "scaling_factor": scale_factor,
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
    }


def text_config(text):
    width = text.get("width", 768)
    quick = bool(text.get("use_quick_gelu", False))
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": width,
        "intermediate_size": 4 * width, "num_hidden_layers": text.get("layers", 12),
        "num_attention_heads": text.get("heads", 12), "hidden_act": "quick_gelu" if quick else "gelu",
        "layer_norm_eps": float(text.get("epsilon", 1e-5)),
        "max_position_embeddings": text.get("context_length", 77), "vocab_size": text.get("vocab_size", 49408),
        "projection_dim": text.get("output_dim", width), "bos_token_id": 49406, "eos_token_id": 49407,
        "pad_token_id": 1 if quick else 0, "attention_dropout": 0.0, "dropout": 0.0,
        "initializer_factor": 1.0, "initializer_range": 0.02, "torch_dtype": "float32",
    }


def scheduler_config(spec):
    """DDIMScheduler config (SD's settings) for a DiffusionSpec."""
    return {
        "_class_name": "DDIMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        "beta_start": spec.linear_start, "beta_end": spec.linear_end,
        "beta_schedule": spec.beta_schedule, "num_train_timesteps": spec.num_train_timesteps,
        "prediction_type": DIFFUSERS_NAMES[spec.prediction_type],
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
        "rescale_betas_zero_snr": spec.rescale_zero_snr,
        "timestep_spacing": "trailing" if spec.rescale_zero_snr else "leading",
    }


def write_tokenizer(folder, pad_token):
    """vocab.json / merges.txt from the shipped BPE file, plus configs naming the pad token."""
    os.makedirs(folder, exist_ok=True)
    tok = CLIPTokenizer(pad_token=pad_token)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    with gzip.open(DEFAULT_VOCAB, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:NUM_MERGES + 1]
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    pad = "<|endoftext|>" if tok.pad_id == tok.eot_id else tok.decoder[tok.pad_id].replace("</w>", "")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    _write_json(os.path.join(folder, "special_tokens_map.json"), special)
    _write_json(os.path.join(folder, "tokenizer_config.json"),
                dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True))


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)


def write_diffusers_folder(exported, cfg, folder):
    """Write ``exported`` (single-file diffusers names: unet./vae./text_encoder. prefixes) as a
    diffusers folder described by model YAML ``cfg``; built in a temp folder, then renamed."""
    params = model_params(cfg)
    spec = resolve_spec(cfg)
    try:
        unet = params["unet_config"]["params"]
        first_stage = params["first_stage_config"]["params"]
        text = params["cond_stage_config"]["params"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"model config lacks {exc} needed for a diffusers folder") from exc
    if os.path.exists(folder):
        raise CheckpointError(f"{folder} already exists; choose a new folder for the diffusers export")
    tmp = f"{folder.rstrip(os.sep)}.tmp-{os.getpid()}"
    try:
        parts = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                 "text_encoder": "model.safetensors"}
        for part, filename in parts.items():
            os.makedirs(os.path.join(tmp, part))
            prefix = part + "."
            write_safetensors({k[len(prefix):]: v for k, v in exported.items() if k.startswith(prefix)},
                              os.path.join(tmp, part, filename), metadata={"format": "pt"})
        sample = params.get("image_size", unet.get("image_size", 64))
        _write_json(os.path.join(tmp, "unet", "config.json"), unet_config(unet, sample))
        _write_json(os.path.join(tmp, "vae", "config.json"),
                    vae_config(first_stage, spec.scale_factor))
        _write_json(os.path.join(tmp, "text_encoder", "config.json"), text_config(text))
        pad = text.get("pad_token", "eot" if text.get("use_quick_gelu") else 0)
        write_tokenizer(os.path.join(tmp, "tokenizer"), pad)
        os.makedirs(os.path.join(tmp, "scheduler"))
        _write_json(os.path.join(tmp, "scheduler", "scheduler_config.json"), scheduler_config(spec))
        inpainting = unet.get("in_channels", 4) == 2 * unet.get("out_channels", 4) + 1   # [latents, mask, masked]
        _write_json(os.path.join(tmp, "model_index.json"), {
            "_class_name": "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline",
            "_diffusers_version": DIFFUSERS_VERSION,
            "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]})
        os.replace(tmp, folder)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
