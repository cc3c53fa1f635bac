"""CLIP image and text towers (ViT-B/32, ViT-B/16, ViT-L/14, or any size) in MindSpore, for CLIP score.

Structure and parameter names are Hugging Face ``CLIPModel``'s (``text_model.encoder.layers.0.
self_attn.q_proj.weight``, ``vision_model.pre_layrnorm.weight``, ``visual_projection.weight`` ...),
so HF folders load by name, our ``.ckpt`` (saved from this network) too, and OpenAI's state dict
(``visual.transformer.resblocks.0.attn.in_proj_weight`` ...) is renamed by :func:`openai_to_hf`.
Pre-LN transformer blocks; the text tower is causal and pooled at the EOT token (the highest id),
the image tower at the class token after ``post_layernorm``; both end in a bias-free projection.
"""
import json
import math
import os
import re

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops

from ldm.errors import CheckpointError, UserError
from ldm.io.text import read_utf8
from ldm.models.layers import gelu_erf

from eval.clip_presets import PRESETS, hf_config_from_preset  # noqa: F401  (re-exported)
from eval.weight_files import read_safetensors


class LayerNorm(nn.Cell):
    """LayerNorm with torch's parameter names (weight/bias), so HF names load unchanged."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = Parameter(np.ones(dim, np.float32), name="weight")
        self.bias = Parameter(np.zeros(dim, np.float32), name="bias")
        # the fused kernel: 8x faster than mean/var/normalise as separate PyNative ops on CPU
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        return self.norm(x, self.weight, self.bias)[0]


class Embedding(nn.Cell):
    def __init__(self, num, dim):
        super().__init__()
        self.weight = Parameter(np.zeros((num, dim), np.float32), name="weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


def _activation(name):
    if name == "quick_gelu":
        return lambda x: x * ops.sigmoid(1.702 * x)
    if name == "gelu":
        return gelu_erf
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: ops.gelu(x, approximate="tanh")
    raise UserError(f"unsupported CLIP activation {name!r} (expected quick_gelu or gelu)")


class Attention(nn.Cell):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Dense(width, width)
        self.k_proj = nn.Dense(width, width)
        self.v_proj = nn.Dense(width, width)
        self.out_proj = nn.Dense(width, width)

    def _split(self, x):
        n, length, _ = x.shape
        return x.reshape(n, length, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x, mask=None):
        n, length, width = x.shape
        q = self._split(self.q_proj(x) * self.scale)
        k = self._split(self.k_proj(x))
        v = self._split(self.v_proj(x))
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2))
        if mask is not None:
            scores = scores + mask
        out = ops.matmul(ops.softmax(scores, axis=-1), v)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(n, length, width))


class MLP(nn.Cell):
    def __init__(self, width, hidden, act):
        super().__init__()
        self.fc1 = nn.Dense(width, hidden)
        self.fc2 = nn.Dense(hidden, width)
        self.act = _activation(act)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        width, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-5)
        self.layer_norm1 = LayerNorm(width, eps)
        self.self_attn = Attention(width, cfg["num_attention_heads"])
        self.layer_norm2 = LayerNorm(width, eps)
        self.mlp = MLP(width, cfg["intermediate_size"], cfg.get("hidden_act", "quick_gelu"))

    def construct(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.CellList([EncoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def construct(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class TextEmbeddings(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        self.token_embedding = Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = Embedding(cfg.get("max_position_embeddings", 77), cfg["hidden_size"])

    def construct(self, ids):
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class TextTransformer(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = LayerNorm(cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-5))
        context = cfg.get("max_position_embeddings", 77)
        self.causal_mask = ms.Tensor(np.triu(np.full((context, context), -np.inf, np.float32), 1))

    def construct(self, ids):
        """ids int32 (N, L) -> pooled (N, width) at the first EOT (argmax id) position."""
        length = ids.shape[1]
        x = self.final_layer_norm(self.encoder(self.embeddings(ids), self.causal_mask[:length, :length]))
        # pick row eot of each sequence with a one-hot sum (exact; graph-mode friendly)
        pick = ops.one_hot(ops.argmax(ids, dim=-1), length, ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32))
        return (pick.expand_dims(-1) * x).sum(axis=1)


class VisionEmbeddings(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        width, patch = cfg["hidden_size"], cfg["patch_size"]
        self.class_embedding = Parameter(np.zeros(width, np.float32), name="class_embedding")
        self.patch_embedding = nn.Conv2d(cfg.get("num_channels", 3), width, patch, stride=patch,
                                         pad_mode="valid", has_bias=False)
        num_positions = (cfg["image_size"] // patch) ** 2 + 1
        self.position_embedding = Embedding(num_positions, width)

    def construct(self, pixels):
        x = self.patch_embedding(pixels)
        n, width = x.shape[0], x.shape[1]
        x = x.reshape(n, width, -1).transpose(0, 2, 1)
        cls = ops.broadcast_to(self.class_embedding.reshape(1, 1, width), (n, 1, width))
        return ops.cat((cls, x), axis=1) + self.position_embedding.weight


class VisionTransformer(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg.get("layer_norm_eps", 1e-5)
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = LayerNorm(cfg["hidden_size"], eps)  # (sic) HF's name
        self.encoder = Encoder(cfg)
        self.post_layernorm = LayerNorm(cfg["hidden_size"], eps)

    def construct(self, pixels):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(x[:, 0])


class CLIPModel(nn.Cell):
    """``get_image_features(pixels (N,3,S,S))`` and ``get_text_features(ids (N,77))`` -> (N, projection_dim)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        text_cfg, vision_cfg = config["text_config"], config["vision_config"]
        dim = config.get("projection_dim", 512)
        self.text_model = TextTransformer(text_cfg)
        self.vision_model = VisionTransformer(vision_cfg)
        self.text_projection = nn.Dense(text_cfg["hidden_size"], dim, has_bias=False)
        self.visual_projection = nn.Dense(vision_cfg["hidden_size"], dim, has_bias=False)
        self.logit_scale = Parameter(np.array(math.log(1 / 0.07), np.float32), name="logit_scale")

    @property
    def image_size(self):
        return self.config["vision_config"]["image_size"]

    def get_image_features(self, pixels):
        return self.visual_projection(self.vision_model(pixels))

    def get_text_features(self, ids):
        return self.text_projection(self.text_model(ids))


# ---------------------------------------------------------------- weights

def openai_to_hf(state_dict):
    """OpenAI CLIP state dict (visual.*, transformer.*, token_embedding ...) -> HF CLIPModel names."""
    out = {}
    for name, value in state_dict.items():
        value = np.asarray(value)
        tower, rest = ("vision_model", name[len("visual."):]) if name.startswith("visual.") else ("text_model", name)
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)", rest)
        if m:
            prefix = f"{tower}.encoder.layers.{m.group(1)}."
            sub = m.group(2)
            if sub == "attn.in_proj_weight" or sub == "attn.in_proj_bias":
                kind = sub.rsplit("_", 1)[-1]
                for part, chunk in zip(("q", "k", "v"), np.split(value, 3, axis=0)):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk
                continue
            sub = (sub.replace("attn.out_proj", "self_attn.out_proj").replace("ln_1", "layer_norm1")
                   .replace("ln_2", "layer_norm2").replace("mlp.c_fc", "mlp.fc1").replace("mlp.c_proj", "mlp.fc2"))
            out[prefix + sub] = value
            continue
        simple = {
            "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
            "visual.class_embedding": "vision_model.embeddings.class_embedding",
            "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
            "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
            "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
            "visual.ln_post.weight": "vision_model.post_layernorm.weight",
            "visual.ln_post.bias": "vision_model.post_layernorm.bias",
            "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
            "positional_embedding": "text_model.embeddings.position_embedding.weight",
            "ln_final.weight": "text_model.final_layer_norm.weight",
            "ln_final.bias": "text_model.final_layer_norm.bias",
            "logit_scale": "logit_scale",
        }
        if name in simple:
            out[simple[name]] = value
        elif name == "visual.proj":
            out["visual_projection.weight"] = value.T
        elif name == "text_projection":
            out["text_projection.weight"] = value.T
        # input_resolution / context_length / vocab_size scalars of OpenAI files are dropped
    return out


def config_from_shapes(state_dict, act="quick_gelu"):
    """Infer an HF-style config from HF-named weights (OpenAI convention: heads = width / 64)."""
    sd = state_dict
    try:
        v_width, _, patch, _ = sd["vision_model.embeddings.patch_embedding.weight"].shape
        n_pos = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
        vocab, t_width = sd["text_model.embeddings.token_embedding.weight"].shape
        ctx = sd["text_model.embeddings.position_embedding.weight"].shape[0]
        dim = sd["visual_projection.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a CLIP checkpoint: weight {exc} is missing") from exc

    def count(prefix):
        return len({k.split(".")[3] for k in sd if k.startswith(prefix + ".encoder.layers.")})

    grid = int(round(math.sqrt(n_pos - 1)))
    return {
        "projection_dim": int(dim),
        "text_config": dict(vocab_size=int(vocab), hidden_size=int(t_width), max_position_embeddings=int(ctx),
                            intermediate_size=int(sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                            num_hidden_layers=count("text_model"), num_attention_heads=max(1, t_width // 64),
                            hidden_act=act, layer_norm_eps=1e-5),
        "vision_config": dict(hidden_size=int(v_width), patch_size=int(patch), image_size=int(grid * patch),
                              intermediate_size=int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                              num_hidden_layers=count("vision_model"), num_attention_heads=max(1, v_width // 64),
                              hidden_act=act, layer_norm_eps=1e-5),
    }


def _read_hf_folder(folder):
    path = os.path.join(folder, "config.json")
    text = read_utf8(path, "CLIP config")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not a JSON config ({exc})") from exc
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object (expected a Hugging Face CLIP config)")
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            break
    else:
        raise UserError(f"{folder}: has config.json but neither model.safetensors nor pytorch_model.bin")
    state = _read_file(path)
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    return _hf_config(config), state


def _hf_config(config):
    """Keep what we use of an HF config.json (text/vision sub-configs fall back to HF defaults)."""
    text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3)
    text.update({k: v for k, v in (config.get("text_config") or {}).items() if k in text})
    vision.update({k: v for k, v in (config.get("vision_config") or {}).items() if k in vision})
    return {"projection_dim": config.get("projection_dim", 512), "text_config": text, "vision_config": vision}


def _read_file(path):
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") or head[:1] == b"\x80":
        from eval.torchscript import is_torchscript, load_torchscript_state_dict
        if is_torchscript(path):  # OpenAI's ViT-*.pt files are TorchScript archives
            return load_torchscript_state_dict(path)
        from ldm.convert.torch_pickle import flatten_state_dict, load_torch_file
        return flatten_state_dict(load_torch_file(path))
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    from ldm.io.ckpt_proto import read_ckpt  # pure Python: a corrupt .ckpt is one error, not a C++ crash
    return {k: v for k, v in read_ckpt(path).items() if not isinstance(v, str)}


def read_clip_weights(path, model_name=None):
    """(config, HF-named state dict) from an HF folder, an OpenAI .pt state dict or our .ckpt."""
    if not path or not os.path.exists(path):
        raise UserError(
            f"CLIP weights not found: {path}. Pass --load_checkpoint with a Hugging Face folder "
            "(config.json + model.safetensors, e.g. openai/clip-vit-base-patch16), OpenAI's ViT-B-32.pt / "
            "ViT-B-16.pt / ViT-L-14.pt state dict, or a .ckpt saved by this tool; nothing is downloaded")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"{path}: folder without config.json (expected a Hugging Face CLIP folder)")
        return _read_hf_folder(path)
    state = _read_file(path)
    if any(k.startswith("visual.") for k in state):
        state = openai_to_hf(state)
    config = hf_config_from_preset(model_name) if model_name else config_from_shapes(state)
    side = os.path.splitext(path)[0] + ".json"  # a config written next to our .ckpt wins
    if os.path.isfile(side):
        try:
            config = _hf_config(json.loads(read_utf8(side, "CLIP config")))
        except json.JSONDecodeError as exc:
            raise UserError(f"{side} is not a JSON config ({exc})") from exc
    return config, state


def load_clip(path, model_name=None, weights=None):
    """CLIPModel in inference mode with all weights from ``path`` (names and shapes checked);
    ``weights``: ``read_clip_weights(path, model_name)`` already done (a CLI checks them first)."""
    config, state = weights or read_clip_weights(path, model_name)
    net = CLIPModel(config)
    params = {p.name: p for p in net.get_parameters()}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    wrong = sorted(n for n in set(params) & set(state) if tuple(params[n].shape) != tuple(state[n].shape))
    if missing or wrong:
        detail = "; ".join(f"{label}: {len(v)} (e.g. {', '.join(v[:3])})" for label, v in
                           (("missing", missing), ("shape mismatch", wrong), ("unexpected", unexpected)) if v)
        raise CheckpointError(f"{path} does not fit the CLIP model{' ' + model_name if model_name else ''}: {detail}")
    for name, param in params.items():
        param.set_data(ms.Tensor(np.asarray(state[name], np.float32)))
    net.set_train(False)
    return net


def save_clip_ckpt(net, path):
    """Our .ckpt plus ``<name>.json`` holding the config (so heads/activation need no guessing)."""
    ms.save_checkpoint(net, path)
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(net.config, f, indent=1)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Convert CLIP weights (HF folder / OpenAI .pt) to our MindSpore .ckpt.")
    parser.add_argument("--convert", nargs=2, metavar=("SRC", "DST_CKPT"), required=True,
                        help="read SRC (torch-free) and write DST .ckpt plus DST .json (its config)")
    parser.add_argument("--model_name", default=None, choices=sorted(PRESETS), help="architecture of an OpenAI .pt")
    args = parser.parse_args(argv)
    save_clip_ckpt(load_clip(args.convert[0], args.model_name), args.convert[1])
    print(f"wrote {args.convert[1]}")
    return 0


if __name__ == "__main__":
    from ldm.errors import run_cli
    run_cli(main)
