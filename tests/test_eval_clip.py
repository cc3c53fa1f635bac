"""CLIP score parity with transformers' CLIPModel (tiny random model saved with save_pretrained, vocab
49408) and torchmetrics' score definition; prompt matching; CLI bad input. Fixtures from
tests/fixtures/make_eval_fixtures.py."""
import csv
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from eval.clip_model import load_clip, openai_to_hf, save_clip_ckpt
from eval.clip_score import CLIPScorer, aggregate_clip_score, per_pair_scores
from eval.prompts import match_images_to_prompts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_FIX = os.path.join(REPO, "tests", "fixtures", "eval")
CLIP_DIR = os.path.join(EVAL_FIX, "clip_tiny")
IMAGES = os.path.join(EVAL_FIX, "images", "clip")
PROMPTS = os.path.join(IMAGES, "prompts.txt")


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(EVAL_FIX, "clip_reference.npz")) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def model():
    return load_clip(CLIP_DIR)


def test_tokenizer_ids_match_fixture(reference):
    """The fixture's ids come from transformers' CLIPTokenizer (cross-checked with open_clip.tokenize)
    in make_eval_fixtures.py, not from ours."""
    from ldm.models.tokenizer import CLIPTokenizer
    prompts = [ln.strip() for ln in open(PROMPTS, encoding="utf-8") if ln.strip()]
    np.testing.assert_array_equal(CLIPTokenizer(pad_token="eot")(prompts), reference["input_ids"])


def test_towers_match_transformers(model, reference):
    img = model.get_image_features(ms.Tensor(reference["pixel_values"])).asnumpy()
    txt = model.get_text_features(ms.Tensor(reference["input_ids"])).asnumpy()
    np.testing.assert_allclose(img, reference["image_embeds"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(txt, reference["text_embeds"], rtol=0, atol=1e-4)


def test_preprocessing_matches_pil_clip_processor(model, reference):
    from eval.images import clip_preprocess, list_images, open_rgb
    ours = np.stack([clip_preprocess(open_rgb(p), 64) for p in list_images(IMAGES)])
    np.testing.assert_allclose(ours, reference["pixel_values"], rtol=0, atol=1e-5)


def test_clip_score_end_to_end_matches(model, reference):
    pairs = match_images_to_prompts(IMAGES, PROMPTS)
    res = CLIPScorer(model).score(pairs, batch_size=4)
    np.testing.assert_allclose(res["image_embeds"], reference["image_embeds"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res["text_embeds"], reference["text_embeds"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(res["per_pair"], reference["per_pair"], rtol=0, atol=1e-4)
    assert abs(res["clip_score"] - float(reference["score"])) <= 1e-4


def test_score_clamps_the_mean_not_each_pair():
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    txt = np.array([[1.0, 0.0], [-0.5, np.sqrt(0.75)]])  # cos 1 and -0.5
    per = per_pair_scores(img, txt)
    np.testing.assert_allclose(per, [100.0, -50.0])
    assert aggregate_clip_score(per) == pytest.approx(25.0)  # not (100 + 0) / 2
    assert aggregate_clip_score(np.array([-10.0, -20.0])) == 0.0


def test_ckpt_and_openai_layouts_load_the_same_model(model, reference, tmp_path):
    path = str(tmp_path / "clip.ckpt")
    save_clip_ckpt(model, path)
    again = load_clip(path)
    from eval.clip_model import main as clip_main
    assert clip_main(["--convert", os.path.join(EVAL_FIX, "openai_tiny_jit.pt"), str(tmp_path / "oa.ckpt")]) == 0
    assert load_clip(str(tmp_path / "oa.ckpt")).config["vision_config"]["patch_size"] == 16
    ids = ms.Tensor(reference["input_ids"])
    np.testing.assert_allclose(again.get_text_features(ids).asnumpy(), reference["text_embeds"], atol=1e-4)
    # OpenAI state-dict layout: rename ours back to OpenAI names, then through openai_to_hf
    hf = {p.name: p.asnumpy() for p in model.get_parameters()}
    openai = _hf_to_openai(hf)
    assert openai_to_hf(openai).keys() == hf.keys()
    for k, v in openai_to_hf(openai).items():
        np.testing.assert_array_equal(v, hf[k])


def _hf_to_openai(hf):
    """Test helper: the inverse renaming (what OpenAI's ViT-*.pt state dicts use)."""
    out = {}
    for tower, prefix in (("vision_model", "visual."), ("text_model", "")):
        layers = sorted({int(k.split(".")[3]) for k in hf if k.startswith(f"{tower}.encoder.layers.")})
        for i in layers:
            src = f"{tower}.encoder.layers.{i}."
            dst = f"{prefix}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[dst + f"attn.in_proj_{kind}"] = np.concatenate(
                    [hf[src + f"self_attn.{q}_proj.{kind}"] for q in "qkv"])
                out[dst + f"attn.out_proj.{kind}"] = hf[src + f"self_attn.out_proj.{kind}"]
                out[dst + f"ln_1.{kind}"] = hf[src + f"layer_norm1.{kind}"]
                out[dst + f"ln_2.{kind}"] = hf[src + f"layer_norm2.{kind}"]
                out[dst + f"mlp.c_fc.{kind}"] = hf[src + f"mlp.fc1.{kind}"]
                out[dst + f"mlp.c_proj.{kind}"] = hf[src + f"mlp.fc2.{kind}"]
    out.update({
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
        "visual.proj": hf["visual_projection.weight"].T,
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "text_projection": hf["text_projection.weight"].T,
        "logit_scale": hf["logit_scale"],
    })
    return out


def test_prompt_matching_rules(tmp_path):
    from PIL import Image
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8)).save(run / "samples" / f"{i:05d}.png")
    # manifest.jsonl next to samples/ (text_to_image.py's layout), file paths relative to it
    with open(run / "manifest.jsonl", "w", encoding="utf-8") as f:
        for i in range(4):
            f.write(json.dumps({"index": i, "file": f"samples/{i:05d}.png", "prompt": f"p{i % 2}"}) + "\n")
        f.write('{"index": 4, "file": "samp')  # torn last line of an interrupted run is ignored
    pairs = match_images_to_prompts(str(run / "samples"))
    assert [t for _, t in pairs] == ["p0", "p1", "p0", "p1"]
    # prompt file: 2 prompts for 4 images -> each prompt covers 2 consecutive images
    pf = tmp_path / "prompts.txt"
    pf.write_text("first\nsecond\n", encoding="utf-8")
    assert [t for _, t in match_images_to_prompts(str(run / "samples"), str(pf))] == \
        ["first", "first", "second", "second"]
    assert {t for _, t in match_images_to_prompts(str(run / "samples"), "a cat")} == {"a cat"}
    pf.write_text("a\nb\nc\n", encoding="utf-8")
    from ldm.errors import UserError
    with pytest.raises(UserError):
        match_images_to_prompts(str(run / "samples"), str(pf))


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "eval", "eval_clip_score.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_writes_per_image_csv(tmp_path, reference):
    out_csv = tmp_path / "scores.csv"
    proc = _cli("--image_path", IMAGES, "--prompt", PROMPTS, "--load_checkpoint", CLIP_DIR,
                "--output_csv", str(out_csv), "--output_json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CLIP score:" in proc.stdout and "N=6" in proc.stdout
    with open(out_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    np.testing.assert_allclose([float(r["clip_score"]) for r in rows], reference["per_pair"], atol=1e-4)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert abs(summary["clip_score"] - float(reference["score"])) <= 1e-4


@pytest.mark.parametrize("case", ["missing_dir", "empty_dir", "corrupt_image", "missing_weights"])
def test_cli_bad_input_one_line(tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    args = {"missing_dir": ["--image_path", str(tmp_path / "nope"), "--prompt", "x", "--load_checkpoint", CLIP_DIR],
            "empty_dir": ["--image_path", str(empty), "--prompt", "x", "--load_checkpoint", CLIP_DIR],
            "corrupt_image": ["--image_path", str(bad), "--prompt", "x", "--load_checkpoint", CLIP_DIR],
            "missing_weights": ["--image_path", IMAGES, "--prompt", "x",
                                "--load_checkpoint", str(tmp_path / "ViT-B-32.pt")]}[case]
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln and "%|" not in ln]
    assert len(lines) == 1 and "error" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_openai_torchscript_archive_matches_open_clip(reference):
    """OpenAI's ViT-*.pt are TorchScript archives: read torch-free, renamed, same embeddings."""
    with np.load(os.path.join(EVAL_FIX, "openai_jit_reference.npz")) as data:
        ref = {k: data[k] for k in data.files}
    net = load_clip(os.path.join(EVAL_FIX, "openai_tiny_jit.pt"))
    img = net.get_image_features(ms.Tensor(reference["pixel_values"])).asnumpy()
    txt = net.get_text_features(ms.Tensor(reference["input_ids"])).asnumpy()
    np.testing.assert_allclose(img, ref["image_embeds"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(txt, ref["text_embeds"], rtol=0, atol=1e-4)


def test_gelu_activations_match_their_formulas():
    """CLIP towers with hidden_act gelu (exact erf) or gelu_new (tanh) compute those functions."""
    import math
    from eval.clip_model import _activation
    x = np.linspace(-6, 6, 97).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))
    np.testing.assert_allclose(_activation("gelu")(ms.Tensor(x)).asnumpy(), exact, atol=1e-5)
    np.testing.assert_allclose(_activation("gelu_new")(ms.Tensor(x)).asnumpy(), tanh, atol=1e-5)
