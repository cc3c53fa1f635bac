"""Inpainting inputs and training masks, numpy only (ldm.inpaint_inputs, ldm.data.masks): the mask threshold,
the size rules (resize at one aspect ratio, refuse another; MindONE's crop and resizecrop), the all-black /
all-white notices, and the random training masks (full 25% of the time, reproducible per generator)."""
import logging

import numpy as np
import pytest

from ldm.data.masks import FULL_PROB, random_mask
from ldm.errors import UserError
from ldm.inpaint_inputs import binarize, prepare, same_aspect


def _image(w, h):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(w, h, box):
    mask = np.zeros((h, w), np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    return mask


def test_mask_threshold_is_half_of_white():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(binarize(gray), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(binarize(np.array([[0.49, 0.5]])), [[0, 1]])
    np.testing.assert_array_equal(binarize(np.array([[True, False]])), [[1, 0]])
    with pytest.raises(UserError, match="NaN"):
        binarize(np.array([[np.nan]]))


def test_sizes_same_aspect_resized_other_refused():
    assert same_aspect((600, 400), (768, 512)) and same_aspect((451, 300), (768, 512))   # within 1%
    assert not same_aspect((640, 427), (512, 512))
    out = prepare(_image(96, 64), _mask(96, 64, (10, 10, 50, 40)), 48, 32)
    assert out.image.shape == (32, 48, 3) and out.mask.shape == (32, 48)
    assert out.notes == [(logging.INFO, "the image and mask (96x64) were resized to 48x32 (same aspect ratio)")]
    assert out.mask[10, 10] == 1 and out.mask[30, 40] == 0
    with pytest.raises(UserError, match="aspect ratios differ; give --W/--H"):
        prepare(_image(96, 64), _mask(96, 64, (0, 0, 9, 9)), 64, 64)
    with pytest.raises(UserError, match="aspect ratios differ, so the mask cannot be placed"):
        prepare(_image(64, 64), _mask(64, 32, (0, 0, 9, 9)), 64, 64)
    half = prepare(_image(64, 64), _mask(32, 32, (8, 8, 24, 24)), 64, 64)      # mask at half size: resized
    assert "the mask (32x32) was resized" in half.notes[0][1] and half.mask[32, 32] == 1 and half.mask[4, 4] == 0
    with pytest.raises(UserError, match="with aug none"):
        prepare(_image(64, 64), _mask(64, 64, (0, 0, 9, 9)), 32, 32, aug="none")


def test_mindone_crops_follow_the_mask():
    image = _image(128, 96)
    crop = prepare(image, _mask(128, 96, (100, 60, 120, 80)), 32, 32, aug="crop")
    np.testing.assert_array_equal(crop.image, image[53:85, 93:125])          # centred on the mask's mean (109, 69)
    assert crop.mask.sum() == 20 * 20
    edge = prepare(image, _mask(128, 96, (120, 90, 128, 96)), 32, 32, aug="crop")   # the window stays inside
    np.testing.assert_array_equal(edge.image, image[64:96, 96:128])
    rc = prepare(image, _mask(128, 96, (40, 30, 70, 60)), 32, 32, aug="resizecrop", mask_ratio=0.75)
    assert rc.image.shape == (32, 32, 3) and "a 39x39 window" in rc.notes[0][1]    # extent 29 / 0.75
    with pytest.raises(UserError, match="smaller than the output window"):
        prepare(_image(16, 16), _mask(16, 16, (0, 0, 4, 4)), 32, 32, aug="crop")


def test_all_black_and_all_white_masks_are_notices():
    black = prepare(_image(32, 32), np.zeros((32, 32), np.uint8), 32, 32)
    white = prepare(_image(32, 32), np.full((32, 32), 255, np.uint8), 32, 32)
    assert black.notes[0][0] == logging.WARNING and "nothing to inpaint" in black.notes[0][1]
    assert white.notes[0][0] == logging.WARNING and "everything is repainted" in white.notes[0][1]


def test_random_training_masks():
    rng = np.random.default_rng(3)
    masks = np.stack([random_mask(rng, 64, 48) for _ in range(400)])
    assert masks.shape == (400, 64, 48) and set(np.unique(masks)) == {0.0, 1.0}
    full = masks.reshape(400, -1).all(axis=1)
    assert abs(full.mean() - FULL_PROB) < 0.07
    partial = masks[~full].reshape(int((~full).sum()), -1).mean(axis=1)
    assert partial.min() > 0 and 0.05 < partial.mean() < 0.6                 # every partial mask repaints something
    np.testing.assert_array_equal(random_mask(np.random.default_rng(9), 32, 32),
                                  random_mask(np.random.default_rng(9), 32, 32))


@pytest.mark.parametrize("inpaint, base", [("v2-inpaint-inference", "v2-inference"),
                                           ("v1-inpaint-inference", "v1-inference"), ("tiny-inpaint-v2", "tiny-v2")])
def test_inpainting_configs_are_their_base_with_nine_input_channels(inpaint, base):
    """The inpainting YAMLs differ from their text-to-image ones in the UNet's in_channels only (9: latents, mask,
    masked-image latents), so MindONE's/Stability's inpainting checkpoints load into them name for name."""
    import os
    from ldm.pipeline_inpaint import CONCAT, config_mode
    from ldm.util import load_config
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours, theirs = (load_config(os.path.join(repo, "configs", f"{name}.yaml")) for name in (inpaint, base))
    unet = ours["model"]["params"]["unet_config"]["params"]
    assert unet["in_channels"] == 9 and config_mode(ours) == CONCAT
    unet["in_channels"] = 4
    assert ours == theirs
