"""Inpainting parity with diffusers' StableDiffusionInpaintPipeline (0.42.1): the same tiny random pipeline,
image, mask, seeds, prompt, negative prompt and guidance -> images within 2/255 and final latents within 1e-3
of their scale. "inpaint-*" cases run the 9-channel inpainting UNet (eps and v readings of the same weights,
strength 1 and below: multistep warm-up mid-schedule, Heun's two calls per step); "blend-*" cases run the 4-channel txt2img model, which diffusers inpaints by latent
blending. References: tests/fixtures/make_inpaint_fixtures.py (no torch here)."""
import json
import os

import numpy as np
import pytest

from inpaint_models import INPAINT_FIXTURES, pipeline

REFS = np.load(os.path.join(INPAINT_FIXTURES, "references.npz"))
SETTINGS = json.loads(str(REFS["settings_json"]))
CASES = sorted(k for k in REFS.files if k.startswith(("inpaint-", "blend-")) and not k.endswith("_final_latents"))
MAX_PIXEL_DIFF = 2


@pytest.mark.parametrize("case", CASES)
def test_inpainting_matches_diffusers(case):
    kind, sampler, pred, strength = case.split("-")        # e.g. inpaint-dpm_solver-eps-s0.6
    strength = float(strength[1:])
    result = pipeline(kind, pred).generate(
        SETTINGS["prompt"], image=REFS["image"], mask=REFS["mask"], negative_prompt=SETTINGS["negative_prompt"],
        width=SETTINGS["width"], height=SETTINGS["height"], steps=SETTINGS["steps"], sampler=sampler,
        scale=SETTINGS["scale"], seeds=[int(s) for s in REFS["seeds"]], strength=strength)
    ref_latents = REFS[case + "_final_latents"]
    err = np.abs(result.latents - ref_latents).max()
    assert err <= 1e-3 * max(1.0, np.abs(ref_latents).max()), f"{case}: final latents differ by {err}"
    diff = np.abs(result.images.astype(np.int16) - REFS[case].astype(np.int16))
    print(f"{case}: max pixel diff {diff.max()}, mean {diff.mean():.4f}, latents {err:.2e}")
    assert result.images.shape == REFS[case].shape and diff.max() <= MAX_PIXEL_DIFF, \
        f"{case}: max diff {diff.max()}, mean {diff.mean():.3f}"


def test_references_depend_on_what_they_should():
    """Guard against a fixture where the prediction type or the model kind would not matter."""
    def diff(a, b):
        return np.abs(REFS[a].astype(int) - REFS[b].astype(int)).max()
    assert diff("inpaint-ddim-eps-s1", "inpaint-euler-v-s1") > 20
    assert diff("inpaint-ddim-eps-s1", "blend-ddim-eps-s1") > 20


def test_blending_keeps_the_image_latents_outside_the_mask():
    """After the last call the kept region of the latents is the image's own latents (the same posterior draw),
    exactly; the repaint region is not."""
    pipe = pipeline("blend", "eps")
    seeds = [int(s) for s in REFS["seeds"]]
    result = pipe.generate("a cat", image=REFS["image"], mask=REFS["mask"], steps=3, sampler="euler", seeds=seeds)
    image_latents = pipe.encode_images(np.repeat(REFS["image"][None], 2, axis=0), seeds).asnumpy()
    keep = np.broadcast_to((REFS["mask"] < 128)[::8, ::8], result.latents.shape)
    np.testing.assert_array_equal(result.latents[keep], image_latents[keep])
    assert np.abs(result.latents[~keep] - image_latents[~keep]).max() > 0.1


def test_no_image_and_mask_is_an_all_white_mask():
    """Without image and mask an inpainting model draws from the text alone: the same as an all-white mask
    (the masked image is then all 0), whatever the image."""
    pipe = pipeline("inpaint", "eps")
    common = dict(steps=2, sampler="ddim", width=64, height=64, seeds=[5, 6])     # the compiled shapes of the above
    plain = pipe.generate("a cat", **common).latents
    white = pipe.generate("a cat", image=REFS["image"], mask=np.full((64, 64), 255, np.uint8), **common).latents
    np.testing.assert_array_equal(plain, white)
