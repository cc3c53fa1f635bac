"""Text tower parity: our FrozenCLIPEmbedder vs transformers CLIPTextModel / OpenCLIP (fixtures made by
tests/fixtures/make_text_fixtures.py with tiny width but the real 49408-token vocabulary)."""
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.convert import names_text
from ldm.convert.checkpoint import load_params_into
from ldm.convert.readers import read_weight_file
from ldm.models.text_encoder import FrozenCLIPEmbedder

TEXT = os.path.join(os.path.dirname(__file__), "fixtures", "text")
TINY = dict(width=8, heads=2, vocab_size=49408, context_length=77, output_dim=8)


def _encoder(layers, quick_gelu, use_fp16=False):
    return FrozenCLIPEmbedder(layers=layers, use_quick_gelu=quick_gelu, use_fp16=use_fp16, **TINY)


def _load(encoder, tower_state, layers):
    converted, _ = names_text.text_to_mindone(tower_state, layers)
    load_params_into(encoder, {"transformer." + k: v for k, v in converted.items()})


def _run(encoder, ids):
    return encoder(ms.Tensor(ids, ms.int32)).asnumpy()


@pytest.mark.parametrize("style,quick_gelu", [("sd1", True), ("sd2", False)])
def test_matches_transformers_clip_text_model(style, quick_gelu):
    """SD1: quick_gelu, last layer; SD2 as diffusers ships it (23 of 24 layers, gelu); the fixture
    script checks this equals final_layer_norm(hidden_states[-2]) of the one-layer-deeper model."""
    ref = np.load(os.path.join(TEXT, f"{style}_text_ref.npz"))
    state = read_weight_file(os.path.join(TEXT, f"{style}_text_encoder", "model.safetensors"))
    encoder = _encoder(2, quick_gelu)
    _load(encoder, state, 2)
    out = _run(encoder, ref["ids"])
    assert out.shape == ref["last_hidden_state"].shape
    assert np.abs(out - ref["last_hidden_state"]).max() <= 1e-4


def test_matches_open_clip_penultimate_layer():
    """Stability SD 2.x checkpoint (OpenCLIP names, legacy torch file, 3 layers): keeping 2 layers
    + ln_final reproduces FrozenOpenCLIPEmbedder's penultimate output."""
    ref = np.load(os.path.join(TEXT, "sd2_openclip_ref.npz"))
    raw = read_weight_file(os.path.join(TEXT, "sd2_text_openclip_legacy.ckpt"))
    prefix = "cond_stage_model.model."
    tower = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    assert names_text.count_layers(tower, names_text.OPEN_CLIP) == 3
    encoder = _encoder(2, False)
    _load(encoder, tower, 2)
    out = _run(encoder, ref["ids"])
    assert np.abs(out - ref["penultimate"]).max() <= 1e-4


def test_tokenize_and_pad_token_default():
    sd1, sd2 = _encoder(1, True), _encoder(1, False)
    assert sd1.tokenize(["a cat"])[0, -1] == 49407
    assert sd2.tokenize(["a cat"])[0, -1] == 0
    assert sd1.tokenize(["a", "b"]).shape == (2, 77)


def test_fp16_compute_close_to_fp32():
    ref = np.load(os.path.join(TEXT, "sd1_text_ref.npz"))
    state = read_weight_file(os.path.join(TEXT, "sd1_text_encoder", "model.safetensors"))
    encoder = _encoder(2, True, use_fp16=True)
    _load(encoder, state, 2)
    out = _run(encoder, ref["ids"]).astype(np.float32)
    assert np.isfinite(out).all()
    assert np.abs(out - ref["last_hidden_state"]).max() < 5e-2


def test_export_round_trip_restores_q_k_v():
    state = names_text.strip_text_model(
        read_weight_file(os.path.join(TEXT, "sd1_text_encoder", "model.safetensors")))
    ours, _ = names_text.text_to_mindone(state, 2)
    back = names_text.text_from_mindone(ours, 2)
    assert set(back) == set(state)
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value)


def test_graph_mode_equals_pynative():
    ref = np.load(os.path.join(TEXT, "sd1_text_ref.npz"))
    state = read_weight_file(os.path.join(TEXT, "sd1_text_encoder", "model.safetensors"))
    encoder = _encoder(2, True)
    _load(encoder, state, 2)
    compiled = ms.jit(encoder.construct)
    out = compiled(ms.Tensor(ref["ids"], ms.int32)).asnumpy()
    assert np.abs(out - ref["last_hidden_state"]).max() <= 1e-4


@pytest.mark.parametrize("version,params", [
    ("v1", dict(width=768, layers=12, heads=12, use_quick_gelu=True)),
    ("v2", dict(width=1024, layers=23, heads=16, use_quick_gelu=False)),
])
def test_names_and_shapes_equal_mindone_lists(version, params):
    from mindspore.nn.utils import no_init_parameters
    path = os.path.join(os.path.dirname(__file__), "fixtures", "mindone_names", f"mindspore_{version}.txt")
    prefix = "cond_stage_model."
    with open(path) as f:
        want = {}
        for line in f:
            name, shape, _ = line.strip().split("#")
            if name.startswith(prefix):
                want[name[len(prefix):]] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    with no_init_parameters():
        encoder = FrozenCLIPEmbedder(context_length=77, vocab_size=49408, **params)
    got = {p.name: tuple(p.shape) for p in encoder.get_parameters()}
    assert got == want
