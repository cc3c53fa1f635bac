"""Textual inversion: MindONE's two TI recipes, unchanged, train the tiny SD 1.x / 2.x models (only the
paths, the model config and the sizes overridden on the command line); only the new token rows move;
the MindONE, diffusers and A1111 files read back to the same rows and give the same images; prompts
are expanded by MindONE's rule and the tokenizer never splits an added token. Each training run is one
compile of the step plus 2 updates (~15 s on an idle 2-core machine, ~40 s when it is shared)."""
import logging
import os

import mindspore as ms
import numpy as np
import pytest

from ldm.errors import UserError
from ldm.io.ms_checkpoint import atomic_save
from ldm.models import textual_inversion as ti
from ldm.models.latent_diffusion import build_model
from ldm.models.tokenizer import CLIPTokenizer
from ldm.train.textual_inversion import TextualInversionRun, multi_step_schedule, parse_config
from ldm.util import load_config
from tests.fuzz_weights import pickle_bytes, tensor_call, torch_zip
from tests.train_standin import make_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "configs", "train")


def pretrained(config, path, seed):
    """A 'pretrained' tiny model: random weights everywhere (the UNet's zero-initialised output convs
    would otherwise block every gradient), saved as a MindSpore checkpoint. Returns name -> array."""
    model = build_model(load_config(config))
    rng = np.random.default_rng(seed)
    for p in model.get_parameters():
        p.set_data(ms.Tensor((p.asnumpy() + rng.standard_normal(p.shape) * 0.05).astype(np.float32)))
    atomic_save(model, str(path))
    return {p.name: p.asnumpy().copy() for p in model.get_parameters()}


def recipe_argv(recipe, model_config, weights, data, out):
    return ["-c", os.path.join(RECIPES, recipe), "--model_config", os.path.join(REPO, "configs", model_config),
            "--pretrained_model_path", str(weights), "--train_data_dir", data, "--output_path", str(out),
            "--image_size", "32", "--image_filter_size", "16", "--max_steps", "8", "--ckpt_save_interval", "4",
            "--show_progress", "False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("ti-shapes"), num_train=4, size=32)


@pytest.fixture(scope="module")
def trained_v2(tmp_path_factory, data):
    """The v2 recipe run through the CLI's own entry point; returns (weights, start arrays, out folder)."""
    import train_textual_inversion
    root = tmp_path_factory.mktemp("ti-v2")
    start = pretrained(os.path.join(REPO, "configs", "tiny-v2.yaml"), root / "base.ckpt", seed=2)
    argv = recipe_argv("train_config_textual_inversion_v2.yaml", "tiny-v2.yaml", root / "base.ckpt", data,
                       root / "out")
    assert train_textual_inversion.main(argv) == 0
    return root / "base.ckpt", start, root / "out"


@pytest.mark.slow
def test_v1_recipe_trains_only_the_new_rows(tmp_path, data):
    start = pretrained(os.path.join(REPO, "configs", "tiny-v1.yaml"), tmp_path / "base.ckpt", seed=1)
    cfg = parse_config(recipe_argv("train_config_textual_inversion_v1.yaml", "tiny-v1.yaml", tmp_path / "base.ckpt",
                                   data, tmp_path / "out"))
    assert (cfg.placeholder_token, cfg.num_vectors, cfg.scheduler, cfg.max_steps) == ("<cat-toy>", 3,
                                                                                       "multi_step_decay", 2)
    run = TextualInversionRun(cfg)
    rows = ti.added_embeddings(run.model)
    toy = run.model.cond_stage_model.tokenizer.encode("toy")
    assert len(toy) == 1
    np.testing.assert_array_equal(rows.asnumpy(), np.tile(start[ti.MINDONE_TABLE][toy[0]], (3, 1)))
    assert run.trainable == [rows] and rows.shape == (3, 32)
    first = rows.asnumpy().copy()
    assert run.dataset.sample(0, 0, 1000, (4, 4, 4))["text"].count("<cat-toy> <cat-toy>_1 <cat-toy>_2") == 1
    run.run()
    params = {p.name: p.asnumpy() for p in run.model.get_parameters()}
    assert set(params) == set(start) | {ti.ADDED_NAME}
    changed = [n for n in start if not np.array_equal(params[n], start[n])]
    assert changed == []                                    # bit-equal: every frozen parameter
    moved = np.abs(params[ti.ADDED_NAME] - first).max()
    assert moved > 1e-5, moved                              # the new rows trained
    weights = tmp_path / "out" / "weights"
    for step in (4, 8):                                     # MindONE's names (data-batch counts)
        token, saved = ti.read_embedding_file(str(weights / f"SDv1.5_textual_inversion_{step}_ti.ckpt"))
        assert token == "<cat-toy>" and saved.shape == (3, 32)
    np.testing.assert_array_equal(saved, params[ti.ADDED_NAME])
    token, diffusers_rows = ti.read_embedding_file(str(weights / "learned_embeds.safetensors"))
    assert token == "<cat-toy>"
    np.testing.assert_array_equal(diffusers_rows, params[ti.ADDED_NAME])


def _a1111_file(path, rows, name):
    """An A1111 embedding .pt (torch zip, written without torch): string_to_param {"*": [n, dim]}."""
    tensor = tensor_call("0", "FloatStorage", rows.size, 0, tuple(rows.shape), (rows.shape[1], 1))
    obj = {"string_to_token": {"*": 265}, "string_to_param": {"*": tensor}, "name": name, "step": 8}
    path.write_bytes(torch_zip(pickle_bytes(obj), {"0": np.ascontiguousarray(rows, np.float32).tobytes()}))
    return str(path)


@pytest.mark.slow
def test_v2_files_load_back_to_identical_embeddings_and_images(trained_v2, tmp_path):
    from ldm.pipeline import Text2ImagePipeline
    base, _, out = trained_v2
    weights = out / "weights"
    mindone = str(weights / "SDv2.0_textual_inversion_8_ti.ckpt")
    _, rows = ti.read_embedding_file(mindone)
    from ldm.convert.readers import write_safetensors
    a1111_st = str(tmp_path / "<cat-toy>.safetensors")
    write_safetensors({"emb_params": rows}, a1111_st)
    files = [mindone, str(weights / "learned_embeds.safetensors"), _a1111_file(tmp_path / "cat.pt", rows, "<cat-toy>")]
    assert ti.read_embedding_file(a1111_st)[0] == "<cat-toy>"
    np.testing.assert_array_equal(ti.read_embedding_file(a1111_st)[1], rows)
    config = os.path.join(REPO, "configs", "tiny-v2.yaml")
    images, conds = [], []
    for path in files:
        pipe = Text2ImagePipeline.from_config(config, str(base), compile=False)
        concept = ti.load_textual_inversion(pipe.model, path)
        assert concept.tokens == ["<cat-toy>", "<cat-toy>_1", "<cat-toy>_2"]
        np.testing.assert_array_equal(ti.added_embeddings(pipe.model).asnumpy(), rows)
        prompt = concept.expand("a photo of a <cat-toy>")
        ids = pipe.model.tokenize([prompt])
        np.testing.assert_array_equal(pipe.model.tokenize(["a photo of a <cat-toy>"]), ids)  # the tokenizer expands
        assert list(ids[0, 5:8]) == [49408, 49409, 49410]
        conds.append(pipe.model.get_learned_conditioning(ms.Tensor(ids.astype(np.int32))).asnumpy())
        result = pipe.generate("a photo of a <cat-toy>", width=32, height=32, steps=2, sampler="ddim", scale=3.0,
                               seed=0)
        images.append(result.images)
    for other in images[1:]:
        np.testing.assert_array_equal(other, images[0])
    plain = Text2ImagePipeline.from_config(config, str(base), compile=False)
    plain_cond = plain.model.get_learned_conditioning(ms.Tensor(plain.model.tokenize(["a photo of a toy"])))
    assert np.abs(conds[0] - plain_cond.asnumpy()).max() > 1e-4   # the learned rows reach the context
    assert images[0].dtype == np.uint8 and images[0].shape == (1, 32, 32, 3)


@pytest.mark.slow
def test_resume_continues_from_the_saved_rows(trained_v2, data, tmp_path):
    base, _, out = trained_v2
    argv = recipe_argv("train_config_textual_inversion_v2.yaml", "tiny-v2.yaml", base, data, out)
    run = TextualInversionRun(parse_config(argv + ["--resume", "True", "--max_steps", "8"]))
    _, saved = ti.read_embedding_file(str(out / "weights" / "learned_embeds.safetensors"))
    assert run.global_step == 2
    np.testing.assert_array_equal(ti.added_embeddings(run.model).asnumpy(), saved)


def test_prompt_expansion_is_mindones_rule(caplog):
    assert ti.expand_prompt("a <cat-toy> on a <cat-toy>", "<cat-toy>", 3) == \
        "a <cat-toy> <cat-toy>_1 <cat-toy>_2 on a <cat-toy> <cat-toy>_1 <cat-toy>_2"
    already = "a <cat-toy> <cat-toy>_1 <cat-toy>_2 toy"
    assert ti.expand_prompt(already, "<cat-toy>", 3) == already
    assert ti.expand_prompt("a <cat-toy>", "<cat-toy>", 1) == "a <cat-toy>"
    with caplog.at_level(logging.WARNING, logger="ldm.textual_inversion"):
        assert ti.expand_prompt("a cat", "<cat-toy>", 2) == "a cat"
    assert "should be in the text prompt" in caplog.text
    assert ti.placeholder_tokens("<x>", 3) == ["<x>", "<x>_1", "<x>_2"]
    with pytest.raises(UserError, match="num_vectors"):
        ti.placeholder_tokens("<x>", 0)


def test_added_tokens_are_never_split():
    tok = CLIPTokenizer(pad_token=0)
    base_ids = tok.encode("a photo of a toy")
    ids = tok.add_tokens(["<cat-toy>", "<cat-toy>_1"])
    assert ids == [49408, 49409] and tok.vocab_size == 49410
    assert tok.encode("a photo of a <cat-toy>_1 <cat-toy> toy") == base_ids[:4] + [49409, 49408, base_ids[4]]
    assert tok.encode("A <CAT-TOY>, x") == [base_ids[0], 49408] + tok.encode(", x")   # cleaned (lower case) first
    assert tok.encode("a photo of a toy") == base_ids
    assert tok.decode(tok.encode("a <cat-toy>_1 toy")) == "a <cat-toy>_1 toy"
    row = tok(["<cat-toy>"])[0]
    assert list(row[:3]) == [tok.sot_id, 49408, tok.eot_id]
    for bad in ("<cat-toy>", "toy"):
        with pytest.raises(UserError, match="already contains"):
            tok.add_tokens([bad])


def test_multi_step_decay_schedule():
    lrs = multi_step_schedule(1.0, 7, 2, [2, 4], 0.5)
    np.testing.assert_allclose(lrs, [0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25])


def test_bad_inputs_are_one_line(data, tmp_path):
    from tests.cli_table import failures, run_table
    common = ["-c", os.path.join(RECIPES, "train_config_textual_inversion_v2.yaml"), "--model_config",
              os.path.join(REPO, "configs", "tiny-v2.yaml"), "--train_data_dir", data, "--output_path", "{tmp}/out",
              "--image_size", "32", "--image_filter_size", "16", "--max_steps", "4", "--show_progress", "False"]
    cases = [dict(argv=common + ["--placeholder_token", ""], expect="placeholder_token is empty"),
             dict(argv=common + ["--num_vectors", "0"], expect="num_vectors must be >= 1"),
             dict(argv=common + ["--num_vectors", "100000"], expect="num_vectors 100000: at most 75",
                  absent=["{tmp}/out"]),
             dict(argv=common + ["--initializer_token", "big red"], expect="must be a single token",
                  absent=["{tmp}/out"]),
             dict(argv=common + ["--placeholder_token", "toy"], expect="already contains the token"),
             dict(argv=common + ["--learnable_property", "colour"], expect="learnable_property must be one of"),
             dict(argv=common + ["--train_data_dir", "{tmp}/nothing"], expect="train_data_dir not found"),
             dict(argv=common + ["--max_steps", "3"], expect="at least gradient_accumulation_steps"),
             dict(argv=common + ["--template_file", "{tmp}/templates.txt"], setup="template_not_utf8",
                  expect="templates.txt line 2 is not UTF-8 text (byte 0xe9)", absent=["{tmp}/out"])]
    for case in cases:
        case["script"] = "train_textual_inversion.py"
    assert failures(cases, run_table(cases)) == []


@pytest.mark.slow
def test_text_to_image_ti_ckpt_path(trained_v2, tmp_path):
    """text_to_image.py --ti_ckpt_path: the learned rows change the image of the same prompt, both files a run
    saves (diffusers' learned_embeds.safetensors and MindONE's _ti.ckpt) give byte-identical images, and the
    manifest keeps the prompt as written. (A missing file: tests/test_text_to_image_bad_inputs.py.)"""
    import glob
    import json
    import text_to_image
    base, _, out = trained_v2
    common = ["--config", os.path.join(REPO, "configs", "tiny-v2.yaml"), "--ckpt_path", str(base),
              "--prompt", "a photo of a <cat-toy>", "--W", "32", "--H", "32", "--sampling_steps", "2",
              "--n_iter", "1", "--n_samples", "1", "--scale", "3", "--seed", "0", "--ms_mode", "1", "--skip_grid"]
    mindone_file = max(glob.glob(str(out / "weights" / "*_ti.ckpt")),       # the last step's, as learned_embeds
                       key=lambda path: int(path.rsplit("_", 2)[-2]))
    files = {}
    for name, extra in (("ti", ["--ti_ckpt_path", str(out / "weights" / "learned_embeds.safetensors")]),
                        ("mindone", ["--ti_ckpt_path", mindone_file]), ("plain", [])):
        assert text_to_image.main(common + extra + ["--output_path", str(tmp_path / name)]) == 0
        samples = tmp_path / name / "samples"
        files[name] = (samples / sorted(os.listdir(samples))[0]).read_bytes()
    assert files["ti"] == files["mindone"] and files["ti"] != files["plain"]
    manifest = [json.loads(line) for line in (tmp_path / "ti" / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["prompt"] == "a photo of a <cat-toy>"
