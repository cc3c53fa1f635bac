"""text_to_image.py as a drop-in for MindONE's: every MindONE flag parses with MindONE's meaning and
default (one table, one interpreter), MindONE's sampler switches pick MindONE's samplers, long prompts
follow MindONE's chunking rule, and two real runs of the CLI on the shipped tiny model take MindONE
command lines end to end (32 px, 2 steps).
"""
import json
import logging
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import text_to_image
from ldm.diffusion.samplers import SAMPLER_NAMES
from ldm.errors import UserError
from ldm.io.ms_checkpoint import atomic_save
from ldm.models.long_prompt import long_prompt_ids, prompt_chunks
from ldm.models.tokenizer import CLIPTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")
TINY_CKPT = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")


def fake_lora(path, unet=True, text=False, rank=2, recorded_rank=None):
    """A LoRA-only file with adapters under the UNet and/or text-encoder prefixes (shapes only matter)."""
    entries = []
    for prefix, on in (("model.diffusion_model.input_blocks.1.1.attn1.to_q.", unet),
                       ("cond_stage_model.transformer.transformer_layer.resblocks.0.attn.attn.out_proj.", text)):
        if on:
            entries += [{"name": prefix + "lora_down.weight", "data": ms.Tensor(np.zeros((rank, 8), np.float32))},
                        {"name": prefix + "lora_up.weight", "data": ms.Tensor(np.zeros((8, rank), np.float32))}]
    if recorded_rank is not None:
        entries.append({"name": "lora_rank", "data": ms.Tensor(np.int32(recorded_rank))})
    return atomic_save(entries, str(path))


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("model: {target: ldm.models.latent_diffusion.LatentDiffusion}\n")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"never read by the argument checks")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("blurry\n")
    return dict(config=str(config), ckpt=str(ckpt), prompts=str(prompts), negatives=str(negatives),
                lora=fake_lora(tmp_path / "lora.ckpt", rank=2),
                lora_text=fake_lora(tmp_path / "lora_te.ckpt", unet=False, text=True, rank=4, recorded_rank=4),
                lora_both=fake_lora(tmp_path / "lora_both.ckpt", unet=True, text=True, rank=2))


def parse(files, extra):
    """(args, settings) of ``extra`` after the fake model files, as main() computes them."""
    args = text_to_image.build_parser().parse_args(["--config", files["config"], "--ckpt_path", files["ckpt"]] +
                                                   [files.get(a, a) for a in extra])
    return args, text_to_image.settings_from_args(args)


# (flags after --config/--ckpt_path; with "--sampler ddim" unless the case is about samplers), expected values:
# "s.x" = RunSettings field, "a.x" = parsed argument, "lora.x" = the LoRA choice, "level" = the log level
FLAG_TABLE = [
    ([], {"s.steps": 20, "s.n_iter": 2, "s.n_samples": 4, "a.version": "2.1", "s.scale": 9.0, "a.ms_mode": 0,
          "s.width": 512, "s.height": 512, "s.n_rows": 0, "s.long_prompts": False, "s.data_path": None,
          "s.negative_data_path": None, "s.pack_prompts": False, "a.device_target": None, "level": logging.INFO,
          "s.prompt": "A cute wolf in winter forest", "s.seed": 42, "s.eta": 0.0, "lora.path": None,
          "a.add_watermark": False, "a.check_safety": False, "a.safety_version": 2, "a.clip_ckpt_path": None}),
    (["-v", "2.0"], {"a.version": "2.0", "s.scale": 9.0}),
    (["-v", "2.0-v"], {"a.version": "2.0-v", "s.scale": 9.0}),
    (["--version", "2.1-v"], {"a.version": "2.1-v"}),
    (["-v", "1.5"], {"s.scale": 7.5}),
    (["-v", "1.5", "--scale", "3"], {"s.scale": 3.0}),
    (["--negative_data_path", "negatives"], {"s.negative_data_path": "negatives"}),
    (["--data_path", "prompts", "--negative_data_path", "negatives"], {"s.data_path": "prompts"}),
    (["--support_long_prompts", "True"], {"s.long_prompts": True}),
    (["--support_long_prompts"], {"s.long_prompts": True}),
    (["--support_long_prompts", "False"], {"s.long_prompts": False}),
    (["--from-file", "prompts"], {"s.data_path": "prompts", "a.from_file": "prompts"}),
    (["--from-file", "prompts", "--data_path", "prompts"], {"s.data_path": "prompts"}),
    (["--n_rows", "3"], {"s.n_rows": 3}),
    (["--log_level", "logging.DEBUG"], {"level": logging.DEBUG}),
    (["--log_level", "warning"], {"level": logging.WARNING}),
    (["--log_level", "40"], {"level": logging.ERROR}),
    (["--add_watermark", "False", "--check_safety", "False", "--clip_ckpt_path", "clip.ckpt", "--safety_version",
      "1"], {"a.add_watermark": False, "a.check_safety": False, "a.safety_version": 1}),
    (["--ms_mode", "1", "--device_target", "CPU"], {"a.ms_mode": 1, "a.device_target": "CPU"}),
    (["--sampling_steps", "15", "--n_iter", "4", "--n_samples", "1", "--W", "768", "--H", "768", "--ddim_eta", "0.5",
      "--fixed_code", "--seed", "7"], {"s.steps": 15, "s.n_iter": 4, "s.n_samples": 1, "s.width": 768,
                                       "s.eta": 0.5, "s.fixed_code": True, "s.seed": 7}),
    (["--lora_ckpt_path", "lora"], {"lora.path": "lora", "lora.rank": 2,
                                    "lora.prefixes": ("model.diffusion_model.",)}),
    (["--use_lora", "True", "--lora_ckpt_path", "lora", "--lora_rank", "8"], {"lora.rank": 2, "s.lora": "lora"}),
    (["--use_lora", "False", "--lora_ckpt_path", "lora"], {"lora.path": None, "s.lora": None}),
    (["--use_lora", "True"], {"lora.path": None}),
    (["--use_lora", "True", "--lora_ckpt_path", "lora_text", "--lora_ft_unet", "False", "--lora_ft_text_encoder",
      "True"], {"lora.prefixes": ("cond_stage_model.",), "lora.rank": 4}),
    (["--lora_ckpt_path", "lora_both", "--lora_ft_text_encoder", "True"],
     {"lora.prefixes": ("model.diffusion_model.", "cond_stage_model.")}),
    (["--lora_ckpt_path", "lora_both", "--lora_scale", "0.5"], {"lora.prefixes": ("model.diffusion_model.",)}),
]


def test_every_mindone_flag_parses_with_mindone_meaning_and_default(files):
    resolved = {"prompts": files["prompts"], "negatives": files["negatives"], "lora": files["lora"],
                "lora_text": files["lora_text"], "lora_both": files["lora_both"]}
    for extra, expected in FLAG_TABLE:
        args, settings = parse(files, extra + ["--sampler", "ddim"])
        for key, want in expected.items():
            want = resolved.get(want, want) if isinstance(want, str) else want
            if key == "level":
                got = text_to_image.parse_log_level(args.log_level)
            else:
                kind, name = key.split(".")
                got = getattr({"s": settings, "a": args, "lora": args.lora_choice}[kind], name)
            assert got == want, (extra, key, got, want)


def test_lora_file_with_only_text_encoder_adapters_needs_the_text_encoder_flag(files):
    with pytest.raises(UserError, match="holds no unet adapters"):
        parse(files, ["--use_lora", "True", "--lora_ckpt_path", "lora_text", "--sampler", "ddim"])


def test_mindone_sampler_switches_pick_mindone_samplers(files):
    """MindONE's if/elif chain: --ddim, then --dpm_solver, --plms, --uni_pc; none = DPM-Solver++;
    --sampler NAME wins over all and still reaches the diffusers-exact samplers."""
    cases = [([], "mindone_dpm_solver_pp"), (["--dpm_solver"], "mindone_dpm_solver"), (["--ddim"], "mindone_ddim"),
             (["--plms"], "mindone_plms"), (["--uni_pc"], "mindone_uni_pc"),
             (["--ddim", "--dpm_solver", "--plms", "--uni_pc"], "mindone_ddim"),
             (["--uni_pc", "--dpm_solver"], "mindone_dpm_solver"), (["--uni_pc", "--plms"], "mindone_plms"),
             (["--ddim", "--sampler", "euler"], "euler"), (["--sampler", "dpm_solver"], "dpm_solver")]
    missing = sorted({name for _, name in cases} - set(SAMPLER_NAMES))
    assert not missing, f"samplers not registered in ldm.diffusion.samplers: {missing}"
    for extra, name in cases:
        assert parse(files, extra)[1].sampler == name, extra


@pytest.fixture(scope="module")
def tiny_pipe():
    from ldm.pipeline import Text2ImagePipeline
    return Text2ImagePipeline.from_config(TINY_CONFIG, TINY_CKPT)


def test_ddim_eta_reaches_the_ddim_family_only(tiny_pipe):
    """MindONE hands --ddim_eta to every sampler; the DDIM-family ones use it, DPM-Solver has none."""
    assert tiny_pipe.make_sampler("mindone_ddim", eta=0.5).config["eta"] == 0.5
    assert tiny_pipe.make_sampler("ddim", eta=0.5).config["eta"] == 0.5
    assert "eta" not in tiny_pipe.make_sampler("mindone_dpm_solver_pp", eta=0.5).config


# ---------------------------------------------------------------- long prompts
def test_long_prompt_chunking_rule():
    """75 ids per chunk while at least 75 remain, then the rest padded; empty chunks fill the batch."""
    tok = CLIPTokenizer(pad_token=0)
    cat = tok.encode("cat")
    assert len(cat) == 1

    def words(n):
        return " ".join(["cat"] * n)
    for n, chunks in ((0, 1), (10, 1), (74, 1), (75, 1), (76, 2), (150, 2), (151, 3)):
        rows = prompt_chunks(tok, words(n))
        assert len(rows) == chunks and all(len(r) == 77 for r in rows), n
        assert all(r[0] == tok.sot_id for r in rows)
        assert [i for r in rows for i in r if i not in (tok.sot_id, tok.eot_id, 0)] == cat * n
    assert prompt_chunks(tok, words(75)) == tok([words(75)]).tolist()       # a full chunk is the plain row
    assert prompt_chunks(tok, "a red cube") == tok(["a red cube"]).tolist()
    assert prompt_chunks(CLIPTokenizer(pad_token="eot"), "a red cube") == \
        CLIPTokenizer(pad_token="eot")(["a red cube"]).tolist()
    ids, neg = long_prompt_ids(tok, [words(150), "a dog"], ["blurry", words(151)])
    assert ids.shape == neg.shape == (2, 3, 77)
    empty = tok([""])[0].tolist()
    assert ids[1, 1].tolist() == empty and ids[1, 2].tolist() == empty and ids[0, 2].tolist() == empty
    assert neg[0, 0].tolist() == tok(["blurry"])[0].tolist() and neg[0, 1].tolist() == empty


def words_text(tok, n, words):
    """A text of exactly ``n`` token ids, cycling through single-token ``words``."""
    assert all(len(tok.encode(w)) == 1 for w in words)
    return " ".join(words[i % len(words)] for i in range(n))


def test_long_prompt_conditioning_is_the_separately_encoded_chunks(tiny_pipe):
    model = tiny_pipe.model
    tok = model.cond_stage_model.tokenizer

    def encode(texts):
        return model.get_learned_conditioning(ms.Tensor(tok(texts))).asnumpy()
    first = words_text(tok, 75, ["red", "circle", "on", "white", "left"])      # 75 ids: one full chunk
    second = words_text(tok, 75, ["blue", "square", "black", "right", "top", "big"])
    long_prompt = first + " " + second                                          # 150 ids
    context = tiny_pipe.encode_prompts([long_prompt, "a cat"], ["blurry", ""], long_prompts=True).asnumpy()
    assert context.shape == (4, 2 * 77, 64)
    uncond, cond = context[:2], context[2:]
    np.testing.assert_allclose(cond[0, :77], encode([first])[0], atol=1e-5)
    np.testing.assert_allclose(cond[0, 77:], encode([second])[0], atol=1e-5)
    np.testing.assert_allclose(cond[1, :77], encode(["a cat"])[0], atol=1e-5)       # short prompt: padded with
    np.testing.assert_allclose(cond[1, 77:], encode([""])[0], atol=1e-5)            # the empty prompt's chunk
    np.testing.assert_allclose(uncond[0], np.concatenate(encode(["blurry", ""]), 0), atol=1e-5)
    # short prompts give exactly the ordinary 77-token conditioning
    short = tiny_pipe.encode_prompts(["a cat"], ["blurry"], long_prompts=True).asnumpy()
    np.testing.assert_allclose(short, tiny_pipe.encode_prompts(["a cat"], ["blurry"]).asnumpy(), atol=1e-6)


@pytest.mark.slow
def test_long_prompt_changes_the_picture_only_past_77_tokens(tiny_pipe):
    """Without --support_long_prompts the words past 77 tokens are cut away; with it they count."""
    kw = dict(width=32, height=32, steps=2, sampler="ddim", scale=4.0, seed=3, negative_prompt="")
    tok = tiny_pipe.model.cond_stage_model.tokenizer
    head = words_text(tok, 75, ["red", "circle", "on", "white", "left"])
    tail = words_text(tok, 60, ["blue", "square", "black", "right", "top", "big"])
    cut = tiny_pipe(head + " " + tail, **kw)
    assert np.array_equal(tiny_pipe(head + " " + tail + " green", **kw), cut)
    long_ = tiny_pipe(head + " " + tail, long_prompts=True, **kw)
    assert np.abs(long_.astype(int) - cut).mean() > 0.5


def test_lora_parts_load_only_the_chosen_adapters(tmp_path):
    """--lora_ft_unet / --lora_ft_text_encoder: a file with both kinds loads only the chosen kind."""
    from ldm.convert.checkpoint import load_model
    from ldm.errors import CheckpointError
    from ldm.models.lora import TEXT_PREFIX, UNET_PREFIX, inject_lora, load_lora, lora_file_summary, lora_layers
    from ldm.models.lora import save_lora
    model = load_model(TINY_CONFIG, TINY_CKPT)
    n_unet = len(inject_lora(model.model, rank=2)) // 2
    n_text = len(inject_lora(model.cond_stage_model, rank=2, text_encoder=True)) // 2
    path = save_lora(model, str(tmp_path / "both.ckpt"))
    assert lora_file_summary(path) == {"rank": 2, "recorded_rank": None, "unet": n_unet, "text_encoder": n_text}
    for prefixes, unet, text in (((UNET_PREFIX,), n_unet, 0), ((TEXT_PREFIX,), 0, n_text),
                                 ((UNET_PREFIX, TEXT_PREFIX), n_unet, n_text)):
        fresh = load_model(TINY_CONFIG, TINY_CKPT)
        assert load_lora(fresh, path, prefixes=prefixes) == unet + text
        assert (len(lora_layers(fresh.model)), len(lora_layers(fresh.cond_stage_model))) == (unet, text)
    with pytest.raises(CheckpointError, match="no LoRA weights under first_stage_model."):
        load_lora(load_model(TINY_CONFIG, TINY_CKPT), path, prefixes=("first_stage_model.",))


# ---------------------------------------------------------------- the real CLI, MindONE command lines
def run_cli(args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, "text_to_image.py")] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """A LoRA file for the tiny model with non-zero adapters (rank 2), as our training writes it."""
    from ldm.convert.checkpoint import load_model
    from ldm.models.lora import inject_lora, lora_layers, save_lora
    model = load_model(TINY_CONFIG, TINY_CKPT)
    inject_lora(model, rank=2)
    rng = np.random.default_rng(0)
    for cell in lora_layers(model):
        cell.lora_up.set_data(ms.Tensor(rng.normal(0, 0.5, cell.lora_up.shape).astype(np.float32)))
    return save_lora(model, str(tmp_path_factory.mktemp("lora") / "lora.ckpt"))


@pytest.mark.slow
def test_mindone_command_line_end_to_end(tmp_path, tiny_lora):
    """-v, a prompt file with a long prompt, a shorter negative file, long-prompt support, LoRA flags,
    n_rows, log level and the off-switches of watermark/safety, as MindONE spells them."""
    prompts = tmp_path / "prompts.txt"
    long_prompt = " ".join(f"red circle number {i}," for i in range(20))         # > 100 ids: 2 chunks
    other = "a blue square, " + " ".join(["on black"] * 40)                      # 2 chunks too: one UNet shape
    prompts.write_text(f"{long_prompt}\n{other}\n")
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("blurry\n")
    out = tmp_path / "out"
    proc = run_cli(["-v", "2.0", "--config", TINY_CONFIG, "--ckpt_path", TINY_CKPT, "--W", "32", "--H", "32",
                    "--sampling_steps", "2", "--n_iter", "1", "--n_samples", "2", "--data_path", str(prompts),
                    "--negative_data_path", str(negatives), "--support_long_prompts", "True", "--n_rows", "1",
                    "--use_lora", "True", "--lora_ckpt_path", tiny_lora, "--lora_rank", "2", "--lora_ft_unet", "True",
                    "--lora_ft_text_encoder", "False", "--add_watermark", "False", "--check_safety", "False",
                    "--safety_version", "2", "--log_level", "logging.WARNING", "--ms_mode", "1",
                    "--device_target", "CPU", "--sampler", "ddim", "--output_path", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in open(out / "manifest.jsonl", encoding="utf-8")]
    assert [(r["prompt"], r["negative_prompt"]) for r in records] == \
        [(long_prompt, "blurry")] * 2 + [(other, "")] * 2
    assert all(r["long_prompts"] and r["lora"] == tiny_lora and r["steps"] == 2 and r["scale"] == 9.0
               for r in records)
    grid = Image.open(out / "grid-00000.png")
    assert grid.size == (32 + 4, 4 * 34 + 2)                                      # one image per row
    assert not [line for line in proc.stderr.splitlines() if line.startswith("INFO ")]   # --log_level WARNING


@pytest.mark.slow
def test_mindone_defaults_and_dpm_solver_switch_end_to_end(tmp_path):
    """A MindONE command that leaves most flags at their defaults: n_iter 2, graph mode, the
    --dpm_solver switch (MindONE's DPM-Solver), 4 images at scale 9 for --version 2.1."""
    out = tmp_path / "out"
    proc = run_cli(["--config", TINY_CONFIG, "--ckpt_path", TINY_CKPT, "--W", "32", "--H", "32",
                    "--sampling_steps", "3", "--n_samples", "2", "--dpm_solver", "--prompt", "a red circle",
                    "--output_path", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in open(out / "manifest.jsonl", encoding="utf-8")]
    assert [(r["sampler"], r["scale"], r["seed"]) for r in records] == [("mindone_dpm_solver", 9.0, 42 + i)
                                                                        for i in range(4)]
    assert sorted(os.listdir(out / "samples")) == [f"{i:05d}.png" for i in range(4)]
