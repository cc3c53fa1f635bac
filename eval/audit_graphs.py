"""The evaluation graphs for scripts/ascend_audit.py (ldm.audit): the FID Inception forward and the
CLIP image and text towers, compiled as eval_fid.py / eval_clip_score.py compile them, on the test
fixtures' random-weight networks (full-size FID Inception; tiny CLIP). Kept here, not in ldm.audit,
because ldm never imports eval."""
import os

import numpy as np

from ldm.audit.graphs import GraphTarget

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_FIXTURES = os.path.join(REPO, "tests", "fixtures", "eval")
INCEPTION_WEIGHTS = os.path.join(EVAL_FIXTURES, "fid_inception_random.pth")
CLIP_WEIGHTS = os.path.join(EVAL_FIXTURES, "clip_tiny")


def fid_inception(ctx):
    from eval.inception import InceptionFeatureExtractor
    extractor = InceptionFeatureExtractor(INCEPTION_WEIGHTS)
    with ctx.graph("forward", compute="fp32"):
        extractor(np.zeros((2, 3, 32, 32), np.float32))


def clip_towers(ctx):
    from eval.clip_model import load_clip
    from eval.clip_score import CLIPScorer
    from ldm.audit.graphs import write_images
    folder = write_images(os.path.join(ctx.workdir, "images"), n=2, captions=False)
    scorer = CLIPScorer(load_clip(CLIP_WEIGHTS))
    with ctx.graph("image_features", compute="fp32"):
        scorer.embed_images([os.path.join(folder, f"{i}.png") for i in range(2)])
    with ctx.graph("text_features", compute="fp32"):
        scorer.embed_texts(["a red circle", "a blue square"])


TARGETS = [
    GraphTarget("fid_inception", fid_inception, "FID Inception-v3 forward (eval/inception.py)"),
    GraphTarget("clip", clip_towers, "CLIP image and text towers (eval/clip_model.py, eval/clip_score.py)"),
]
