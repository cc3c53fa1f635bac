"""The new-concept demo (scripts/demo_concepts.sh): the star data and its scorer, then textual inversion and
DreamBooth (LoRA, prior preservation) teaching the shipped tiny base a shape it never saw, each checked
against the base on held-out prompts (the star in colours and on backgrounds the instance images lack).

What tests/test_textual_inversion.py already proves is not repeated: every frozen parameter bit-equal
after a run (test_v1_recipe_trains_only_the_new_rows) and the MindONE / diffusers / A1111 files giving
identical images through the Python API (test_v2_files_load_back_to_identical_embeddings_and_images)
and through ``text_to_image.py --ti_ckpt_path`` (test_text_to_image_ti_ckpt_path).
The two training tests are slow: on the shared 2-core machine (load 8-12) the TI test took 10 min (base
samples included) and the DreamBooth one 15 min; most of it is sampling 129 base and 105 trained images.
"""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.synthetic_concept import (CONCEPTS, candidate_masks, draw_concept, find_concept, make_concept_set,
                                        parse_prompt, score_concept_images)
from datasets.synthetic_shapes import BACKGROUNDS, COLOURS, SHAPES, all_combinations, draw, find_shape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_concept_set_files(tmp_path):
    info = make_concept_set(str(tmp_path), "star", num_images=5, colour="red", background="white", size=32)
    names = sorted(os.listdir(tmp_path / "instance"))
    assert names == [f"{i:05d}.png" for i in range(5)]
    images = [np.asarray(Image.open(tmp_path / "instance" / n)) for n in names]
    assert all(a.shape == (32, 32, 3) for a in images)
    assert len({a.tobytes() for a in images}) == 5                     # shifted, not copies
    assert info["instance_prompt"] == "a red sks on a white background, center"
    assert json.loads((tmp_path / "concept.json").read_text()) == info
    assert (tmp_path / "ti_templates.txt").read_text() == "a red {} on a white background, center\n"
    token = (tmp_path / "heldout_token.txt").read_text().splitlines()
    placeholder = (tmp_path / "heldout_placeholder.txt").read_text().splitlines()
    assert [p.replace("sks", "<star>") for p in token] == placeholder
    pairs = {parse_prompt(p)[1:3] for p in token}
    assert ("red", "white") not in pairs and len(pairs) == len(token) == 8   # yellow left out (docstring)
    classes = (tmp_path / "class_prompts.txt").read_text().splitlines()
    assert {parse_prompt(p)[0] for p in classes} == set(SHAPES) and len(classes) == 27


def test_four_way_shape_test_tells_the_concept_apart():
    """Every true image is found as what it is among the four shapes: the concept in every colour and
    background (shifted up to a pixel), the three known shapes in all 180 synthetic-shapes combinations;
    the default three-way find_shape is unchanged by the new option."""
    for concept in CONCEPTS:
        masks = candidate_masks(concept)
        assert set(masks) == set(SHAPES) | {concept}
        for colour in COLOURS:
            for background in BACKGROUNDS:
                for offset in ((0, 0), (0.8, -0.6)):
                    found = find_concept(draw_concept(concept, colour, background, 32, offset), concept)
                    assert found[:2] == (colour, concept), (concept, colour, background, offset, found)
        for shape, colour, background, position in all_combinations():
            img = draw(shape, colour, background, position, 32)
            assert find_concept(img, concept)[:2] == (colour, shape)
            assert find_shape(img)[:2] == (colour, shape)


def _run_folder(folder, pairs):
    """A text_to_image.py-style output folder (samples/ + manifest.jsonl) of (PIL image, prompt)."""
    os.makedirs(folder / "samples")
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
        for i, (img, text) in enumerate(pairs):
            img.save(folder / "samples" / f"{i:05d}.png")
            f.write(json.dumps({"index": i, "file": f"samples/{i:05d}.png", "prompt": text}) + "\n")
    return str(folder)


def test_score_concept_groups_and_cli(tmp_path):
    star = lambda c, b: draw_concept("star", c, b, 32)                  # noqa: E731
    pairs = [(star("blue", "black"), "a blue sks on a black background, center"),        # right
             (star("green", "black"), "a blue <star> on a black background, center"),    # wrong colour
             (draw("circle", "blue", "gray", "center", 32), "a blue sks on a gray background, center"),  # not a star
             (draw("square", "red", "white", "center", 32), "a red square on a white background, center"),
             (star("red", "white"), "a red circle on a white background, center")]       # drifted to the concept
    scores = score_concept_images(pairs, "star")
    assert scores["concept"] == dict(concept=2 / 3, concept_colour=1 / 3, background=1.0, n=3)
    assert scores["class"]["n"] == 2 and scores["class"]["shape"] == 0.5
    assert scores["class"]["drawn_as_concept"] == 0.5
    folder = _run_folder(tmp_path / "run", pairs)
    script = os.path.join(REPO, "scripts", "score_concept.py")
    proc = subprocess.run([sys.executable, script, "--output_path", folder, "--json_out", str(tmp_path / "s.json"),
                           "--min_concept", "0.7"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1 and "below the bound" in proc.stderr, proc.stderr
    assert json.loads(proc.stdout) == json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(scores))
    from tests.cli_table import failures, run_table
    bad_caption = _run_folder(tmp_path / "bad", [(star("red", "white"), "a photo of a dog")])
    cases = [dict(script="scripts/score_concept.py", argv=["--output_path", "{tmp}/none"], expect="is not a folder"),
             dict(script="scripts/score_concept.py", argv=["--output_path", folder, "--concept", "hexagon"],
                  expect="--concept"),
             dict(script="scripts/score_concept.py", argv=["--output_path", bad_caption],
                  expect="not a synthetic-shapes caption"),
             dict(script="datasets/synthetic_concept.py", argv=["--output_path", "{tmp}/c", "--size", "30"],
                  expect="--size"),
             dict(script="datasets/synthetic_concept.py", argv=["--output_path", "{tmp}/c", "--token", "two words"],
                  expect="--token", absent=["{tmp}/c"])]
    assert failures(cases, run_table(cases)) == []


# ---------------------------------------------------------------- training runs (the demo's recipes, fewer steps)
BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
RECIPES = os.path.join(REPO, "configs", "train")
SEEDS = 3   # images per prompt: 8 held-out concept prompts -> 24 images, 27 class prompts -> 81


def _sample(out, prompts_file, *extra):
    """text_to_image.py as the demo runs it (DPM-Solver 15 steps, scale 4, seed 42); returns its folder."""
    import text_to_image
    argv = ["--config", os.path.join(REPO, "configs", "tiny-shapes-v2.yaml"), "--ckpt_path", BASE,
            "--data_path", str(prompts_file), "--pack_prompts", "--n_iter", str(SEEDS), "--n_samples", "8",
            "--W", "32", "--H", "32", "--sampler", "dpm_solver", "--sampling_steps", "15", "--scale", "4",
            "--seed", "42", "--skip_grid", "--output_path", str(out), *extra]
    assert text_to_image.main(argv) == 0
    return str(out)


@contextlib.contextmanager
def _one_pipeline():
    """Inside, text_to_image.main builds its pipeline once per set of from_config arguments (config,
    checkpoint, LoRA, spec and attention settings) and reuses it: the runs are otherwise the CLI's, the
    images are the same (the compiled graphs are per pipeline, each run seeds its own noise), and each
    reuse saves building the model and compiling its graphs again (~8-10 s a run on 2 cores). Not for
    --ti_ckpt_path runs: text_to_image.main loads the embeddings into the pipeline's model."""
    from ldm.pipeline import Text2ImagePipeline
    original, built = Text2ImagePipeline.from_config, {}

    def from_config(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in built:
            built[key] = original(*args, **kwargs)
        return built[key]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Text2ImagePipeline, "from_config", from_config)
        yield


def _scores(folder):
    from scripts.score_concept import load_pairs
    return score_concept_images(load_pairs(folder), "star")


@pytest.fixture(scope="module")
def concept(tmp_path_factory):
    root = tmp_path_factory.mktemp("concept")
    make_concept_set(str(root / "data"), "star")
    return root


DB_TEST = "test_dreambooth_lora_with_prior_learns_the_star"


def _start_db_training(concept):
    """train_dreambooth.py in its own interpreter, as users run it (after the TI run and the pipelines of
    this module in one process, the DB train step's ms.jit compile failed here: "Parse Lambda Function Fail
    ... got IfExp", MindSpore 2.8); output to files (a pipe nobody reads could fill and block it)."""
    out = concept / "db"
    argv = [sys.executable, os.path.join(REPO, "train_dreambooth.py"), "-c",
            os.path.join(RECIPES, "train_config_tiny_concept_dreambooth_lora.yaml"),
            "--pretrained_model_path", BASE, "--instance_data_dir", str(concept / "data" / "instance"),
            "--class_data_dir", str(concept / "class"), "--num_class_images", "8", "--output_path", str(out),
            "--max_steps", str(DB_STEPS), "--ckpt_save_interval", str(DB_STEPS), "--seed", TRAIN_SEED]
    logs = {name: open(concept / f"db_train.{name}", "w+", encoding="utf-8") for name in ("stdout", "stderr")}
    return subprocess.Popen(argv, stdout=logs["stdout"], stderr=logs["stderr"], cwd=REPO, text=True), logs


@pytest.fixture(scope="module", autouse=True)
def db_training(request, concept):
    """The DreamBooth test's training run, started with the module when that test is selected: it trains in
    its own process while this one samples the base and runs TI (sampling keeps ~1 of the 2 cores busy).
    Its result does not depend on when it runs (a process of its own, fixed seed, files only it writes)."""
    run = None
    if any(item.name == DB_TEST for item in request.session.items):
        run = _start_db_training(concept)
    yield run
    if run is not None:
        proc, logs = run
        if proc.poll() is None:          # the DB test did not wait for it (failed earlier, interrupted)
            proc.kill()
            proc.wait()
        for f in logs.values():
            f.close()


@pytest.fixture(scope="module")
def base_scores(concept):
    """The base model on the held-out prompts (rare token, placeholder) and the class prompts."""
    data = concept / "data"
    scores = {}
    with _one_pipeline():
        for name in ("heldout_token", "heldout_placeholder", "class_prompts"):
            scores[name] = _scores(_sample(concept / f"base_{name}", data / f"{name}.txt"))
    return scores


TRAIN_SEED = os.environ.get("CONCEPT_TEST_SEED", "0")
TI_STEPS, DB_STEPS = 100, 100
# Measured 2026-12-02 (this recipe at 100 steps, 24 held-out images, DPM-Solver 15 steps, scale 4): TI concept
# score 0.292 (training seed 0) and 0.208 (seed 1); the base with the same placeholder words 0.083 (2 of 24; with
# "sks" 0.042). Earlier TI trials: 1 vector lr 1e-3 0.042-0.083, 1 vector lr 1e-2 0.125, 2 vectors lr 3e-3 0.167-0.208.
# 0.15 sits between the base and the lowest trained run, one to two images from each: the effect is real but small
# (this base follows even its own captions weakly: class-prompt shape score 0.39).
# With the two-stage base TI measured 0.167 (4 of 24) against the base's 0.042 (1 of 24): 0.125 (3 of 24) sits
# between them.
TI_MIN_CONCEPT = 0.125
# Measured 2026-12-02 (this recipe at 100 steps with 8 class images, 24 held-out images): DreamBooth concept score
# 0.167 (seed 0) and 0.250 (seed 1), base with "sks" 0.042 (1 of 24); the demo's 150 steps / 16 class images: 0.125
# and 0.208 (two samplings), lr 5e-3: 0.125. Threshold 0.10: above the base by 1.4 images, below the trained runs
# by 1 to 3.6 images of 24 (small, as for TI).
DB_MIN_CONCEPT = 0.10
# Class prompts (27 known-shape captions x 3 images), shape score: base 0.370; with prior preservation 0.346 and
# 0.333 (seeds 0, 1), the demo's run 0.296 vs 0.358 (drops 0.024-0.062). The same run WITHOUT prior preservation
# (seed 0, 100 steps): 0.160, a drop of 0.21, and 0.27 of the class images drawn as the star (0.12 with it, base 0.10);
# its concept score 0.25. The margin 0.10 lies between the two (not run here: it would double the test's time).
# Re-measured 2026-12-02 with the two-stage base (docs/demo.md "Demo model"; training seed 0, 100 steps): TI 0.167 (base
# with the placeholder 0.042); DreamBooth + prior concept 0.167 (base with "sks" 0.000), class shape 0.642 vs the
# base's 0.914 (a drop of 0.27; 0.28 of the class images drawn as the star); the same run WITHOUT prior
# preservation: concept 0.292, class shape 0.309 (a drop of 0.61; 0.49 drawn as the star). The better base
# follows its class prompts far better, so the drops are larger in absolute terms; the margin 0.40 lies between
# the run with prior preservation (passes by 0.13) and the one without (fails by 0.21).
CLASS_SHAPE_MARGIN = 0.40


@pytest.mark.slow
def test_textual_inversion_learns_the_star(concept, base_scores):
    """The demo's TI recipe (100 steps instead of 200): the placeholder draws the star on held-out prompts
    far more often than the base does with the same words (that both saved files give identical images
    through text_to_image.py is tests/test_textual_inversion.py's test_text_to_image_ti_ckpt_path)."""
    import train_textual_inversion
    data, out = concept / "data", concept / "ti"
    argv = ["-c", os.path.join(RECIPES, "train_config_tiny_concept_textual_inversion.yaml"),
            "--pretrained_model_path", BASE, "--train_data_dir", str(data / "instance"),
            "--template_file", str(data / "ti_templates.txt"), "--output_path", str(out),
            "--max_steps", str(TI_STEPS), "--ckpt_save_interval", str(TI_STEPS), "--seed", TRAIN_SEED]
    assert train_textual_inversion.main(argv) == 0
    weights = out / "weights"
    assert (weights / f"SDv2.0_textual_inversion_{TI_STEPS}_ti.ckpt").is_file()   # MindONE's file beside it
    run = _sample(concept / "ti_st", data / "heldout_placeholder.txt", "--ti_ckpt_path",
                  str(weights / "learned_embeds.safetensors"))
    assert len(os.listdir(os.path.join(run, "samples"))) == 8 * SEEDS
    learnt = _scores(run)["concept"]["concept"]
    base = base_scores["heldout_placeholder"]["concept"]["concept"]
    print(f"\nconcept score, held-out placeholder prompts: TI {learnt:.3f}, base {base:.3f}")
    assert base < TI_MIN_CONCEPT <= learnt, (base, learnt)


@pytest.mark.slow
def test_dreambooth_lora_with_prior_learns_the_star(concept, base_scores, db_training):
    """The demo's DreamBooth LoRA recipe with prior preservation (100 steps instead of 150): the rare token
    draws the star on held-out prompts far more often than the base does, and the known shapes (class
    prompts) keep the base's shape score within a margin."""
    data, out = concept / "data", concept / "db"
    proc, logs = db_training or _start_db_training(concept)    # started with the module (db_training)
    try:
        proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs["stderr"].seek(0)
    assert proc.returncode == 0, logs["stderr"].read()[-2000:]
    lora = str(out / "ckpt" / f"sd-{DB_STEPS}_lora.ckpt")
    with _one_pipeline():
        held = _scores(_sample(concept / "db_heldout", data / "heldout_token.txt", "--lora_ckpt_path", lora))
        classes = _scores(_sample(concept / "db_class", data / "class_prompts.txt", "--lora_ckpt_path", lora))
    learnt, base = held["concept"]["concept"], base_scores["heldout_token"]["concept"]["concept"]
    shape, base_shape = classes["class"]["shape"], base_scores["class_prompts"]["class"]["shape"]
    print(f"\nconcept score, held-out token prompts: DreamBooth {learnt:.3f}, base {base:.3f}; class shape score "
          f"{shape:.3f} (base {base_shape:.3f}), drawn as the star {classes['class']['drawn_as_concept']:.3f} "
          f"(base {base_scores['class_prompts']['class']['drawn_as_concept']:.3f})")
    assert base < DB_MIN_CONCEPT <= learnt, (base, learnt)
    assert shape >= base_shape - CLASS_SHAPE_MARGIN, (shape, base_shape)
