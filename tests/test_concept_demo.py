"""The new-concept demo (scripts/demo_concepts.sh): the star data and its scorer, then textual inversion and
DreamBooth (LoRA, prior preservation) teaching the shipped tiny base a shape it never saw, each checked
against the base on held-out prompts (the star in colours and on backgrounds the instance images lack).

What tests/test_textual_inversion.py already proves is not repeated: every frozen parameter bit-equal
after a run (test_v1_recipe_trains_only_the_new_rows) and the MindONE / diffusers / A1111 files giving
identical images through the Python API (test_v2_files_load_back_to_identical_embeddings_and_images).
Added here: the same through ``text_to_image.py --ti_ckpt_path`` with both files a run saves.
"""
import json
import os

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
    import subprocess
    import sys
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
