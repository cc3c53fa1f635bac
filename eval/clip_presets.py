"""OpenAI CLIP tower sizes as Hugging Face-style configs (no MindSpore import: the torch side of
bench/bench_eval.py builds the same architectures from here)."""


# OpenAI's published towers (heads = width / 64, quick_gelu, 77 tokens, vocab 49408)
PRESETS = {
    "ViT-B/32": dict(embed_dim=512, image_size=224, patch=32, v_width=768, v_layers=12, t_width=512, t_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_size=224, patch=16, v_width=768, v_layers=12, t_width=512, t_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_size=224, patch=14, v_width=1024, v_layers=24, t_width=768, t_layers=12),
}


def hf_config_from_preset(name):
    p = PRESETS[name]
    return {
        "projection_dim": p["embed_dim"],
        "text_config": dict(vocab_size=49408, hidden_size=p["t_width"], intermediate_size=4 * p["t_width"],
                            num_hidden_layers=p["t_layers"], num_attention_heads=p["t_width"] // 64,
                            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        "vision_config": dict(hidden_size=p["v_width"], intermediate_size=4 * p["v_width"],
                              num_hidden_layers=p["v_layers"], num_attention_heads=p["v_width"] // 64,
                              image_size=p["image_size"], patch_size=p["patch"], hidden_act="quick_gelu",
                              layer_norm_eps=1e-5),
    }
