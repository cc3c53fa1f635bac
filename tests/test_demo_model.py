"""The shipped demo base model follows its prompts, and the score that says so is not fooled.

models/tiny_shapes_base.ckpt (eps, configs/tiny-shapes-v2.yaml) samples the 40 test captions of the
synthetic shapes data with DPM-Solver; ``caption_match`` finds the drawn shape without the caption
and checks its colour and its kind (IoU against each shape's exact mask) against the caption.

Thresholds: a model that ignores the prompt draws the captioned colour 1 time in 4 (four colours),
the captioned colour-and-shape 1 time in 12 and the captioned position 1 time in 5, so colour >= 0.8,
shape >= 0.7 and position >= 0.6 are far above chance. The shipped model (two stages, docs/demo.md
"Demo model") measured colour 1.0, shape 0.95, position 0.925, background 1.0 on these 40 prompts when it was
made (2026-12-02); stage 1 alone (the base shipped before) 0.75 / 0.60 / 0.15 / 0.40. The same run with
the UNet re-initialised (VAE and text encoder kept) must fall below all three, which shows the score
measures the denoiser, not the decoder or the palette.
"""
import os

import numpy as np
import pytest

from datasets.synthetic_shapes import make_dataset, score_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
CONFIG = os.path.join(REPO, "configs", "tiny-shapes-v2.yaml")
MIN_COLOUR, MIN_SHAPE, MIN_POSITION = 0.8, 0.7, 0.6
SCALE = 4.0

needs_base = pytest.mark.skipif(not os.path.isfile(BASE), reason="models/tiny_shapes_base.ckpt not built")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    root = make_dataset(str(tmp_path_factory.mktemp("shapes")), num_train=0, num_test=40, size=32)
    with open(os.path.join(root, "test_prompts.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _generate(pipe, prompts):
    images = pipe.generate(prompts, width=32, height=32, steps=15, sampler="dpm_solver", scale=SCALE, seed=42).images
    from PIL import Image
    return score_images([(Image.fromarray(img), text) for img, text in zip(images, prompts)])


@pytest.fixture(scope="module")
def base_pipe():
    """One pipeline for both sampling tests: its graphs compile once (the re-initialised UNet has the same
    structure; its weights are swapped in and put back)."""
    from ldm.pipeline import Text2ImagePipeline
    return Text2ImagePipeline.from_config(CONFIG, BASE)


@needs_base
def test_base_model_follows_prompts(prompts, base_pipe):
    scores = _generate(base_pipe, prompts)
    print("base model", scores)
    assert scores["colour"] >= MIN_COLOUR and scores["shape"] >= MIN_SHAPE, scores
    assert scores["position"] >= MIN_POSITION, scores


@needs_base
def test_reinitialised_unet_fails_the_same_check(prompts, base_pipe):
    import mindspore as ms

    from ldm.models.latent_diffusion import build_model
    ms.set_seed(123)
    fresh = build_model(CONFIG).model.diffusion_model
    fresh_params = {p.name: p for p in fresh.get_parameters()}
    unet_params = list(base_pipe.model.model.diffusion_model.get_parameters())
    assert {p.name for p in unet_params} == set(fresh_params)
    trained = {p.name: p.data.copy() for p in unet_params}
    # written in place (ops.assign): the compiled graphs keep the parameters' memory (set_data is not seen)
    try:
        for p in unet_params:
            ms.ops.assign(p, fresh_params[p.name].data.copy())
        scores = _generate(base_pipe, prompts)
    finally:
        for p in unet_params:
            ms.ops.assign(p, trained[p.name])
    print("re-initialised UNet", scores)
    assert scores["colour"] < MIN_COLOUR and scores["shape"] < MIN_SHAPE and scores["position"] < MIN_POSITION, scores


def test_caption_match_on_exact_renders_and_wrong_shapes():
    from PIL import Image

    from datasets.synthetic_shapes import SHAPES, all_combinations, caption, caption_match, draw
    specs = all_combinations()
    right = [caption_match(draw(*spec, size=32), caption(*spec)) for spec in specs]
    assert all(all(r.values()) for r in right)
    wrong_shape = [caption_match(draw(other, c, b, p, size=32), caption(s, c, b, p))["shape"]
                   for s, c, b, p in specs for other in SHAPES if other != s]
    assert not any(wrong_shape)
    blank = caption_match(Image.new("RGB", (32, 32), (245, 245, 245)), caption(*specs[0]))
    assert not blank["colour"] and not blank["shape"]
