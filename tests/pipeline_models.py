"""The tiny random SD pipelines of tests/fixtures/pipeline, converted once per test session.

Conversion goes through scripts/convert_weights.py (diffusers folder -> our .ckpt + model YAML),
exactly as a user would run it, so the pipeline tests also cover that path.
"""
import functools
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE_FIXTURES = os.path.join(REPO, "tests", "fixtures", "pipeline")


@functools.lru_cache(maxsize=None)
def converted(style):
    """(config path, checkpoint path) of fixture pipeline ``style`` ("sd1" | "sd2")."""
    out = tempfile.mkdtemp(prefix=f"pipeline-{style}-")
    ckpt, config = os.path.join(out, f"tiny_{style}.ckpt"), os.path.join(out, f"tiny_{style}.yaml")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"),
                           "--source", os.path.join(PIPELINE_FIXTURES, style), "--target", ckpt,
                           "--config_out", config], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_weights.py failed on the {style} fixture: {proc.stderr.strip()[-2000:]}")
    return config, ckpt


@functools.lru_cache(maxsize=None)
def _pipeline(style):
    from ldm.pipeline import Text2ImagePipeline
    return Text2ImagePipeline.from_config(*converted(style))


def pipeline(style, prediction_type="eps"):
    """The converted fixture pipeline, shared by the test files of a session (graphs compile once);
    ``prediction_type`` reads the same weights as an eps or a v model."""
    pipe = _pipeline(style)
    pipe.model.set_spec(pipe.spec.replace(prediction_type=prediction_type))
    return pipe
