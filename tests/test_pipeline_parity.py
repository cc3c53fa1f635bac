"""End-to-end parity with diffusers: the same tiny random pipeline (converted from its diffusers
folder), the same initial latents, prompt, negative prompt and guidance -> images within 2/255
(and final latents within 1e-3 of their scale, a sharper check than 8-bit images).

References come from tests/fixtures/make_pipeline_fixtures.py (diffusers StableDiffusionPipeline with
each scheduler built from SD's settings and its own defaults); no torch here.
"""
import json
import os

import numpy as np
import pytest

from ldm.pipeline import Text2ImagePipeline
from pipeline_models import PIPELINE_FIXTURES, pipeline

REFS = np.load(os.path.join(PIPELINE_FIXTURES, "references.npz"))
SETTINGS = json.loads(str(REFS["settings_json"]))
CASES = sorted(k for k in REFS.files if k.startswith(("sd1_", "sd2_")) and not k.endswith("_final_latents"))
MAX_PIXEL_DIFF = 2


@pytest.mark.parametrize("case", CASES)
def test_images_match_diffusers(case):
    style, rest = case.split("_", 1)
    sampler, pred = rest.rsplit("_", 1)
    pipe = pipeline(style, pred)
    result = pipe.generate(SETTINGS["prompt"], negative_prompt=SETTINGS["negative_prompt"], width=SETTINGS["width"],
                  height=SETTINGS["height"], steps=SETTINGS["steps"], sampler=sampler, scale=SETTINGS["scale"],
                  latents=REFS["latents"])
    ref_latents = REFS[case + "_final_latents"]
    err = np.abs(result.latents - ref_latents).max()
    assert err <= 1e-3 * max(1.0, np.abs(ref_latents).max()), f"{case}: final latents differ by {err}"
    images, ref = result.images, REFS[case]
    assert images.dtype == np.uint8 and images.shape == ref.shape
    diff = np.abs(images.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= MAX_PIXEL_DIFF, f"{case}: max diff {diff.max()}, mean {diff.mean():.3f}"


def test_eps_and_v_references_differ():
    """Guard against a fixture where the prediction type would not matter."""
    assert np.abs(REFS["sd2_ddim_eps"].astype(int) - REFS["sd2_ddim_v"].astype(int)).max() > 20
