"""Our models have exactly MindONE's parameter names and shapes (so their checkpoints load unchanged)."""
import os
import subprocess
import sys

import pytest

from ldm.models.latent_diffusion import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from list_params import param_lines  # noqa: E402


def name_shapes(lines):
    """{(name, shape)} from ``name#shape#dtype`` lines; the dtype column is ignored (MindONE stores fp16 tables)."""
    return {tuple(line.strip().split("#")[:2]) for line in lines if line.strip()}


@pytest.mark.parametrize("config,reference,count", [
    ("configs/v2-vpred-inference.yaml", "mindspore_v2.txt", 1214),
    ("configs/v1-inference.yaml", "mindspore_v1.txt", 1082),
])
def test_full_size_names_and_shapes_match_mindone(fixtures_dir, config, reference, count):
    with open(os.path.join(fixtures_dir, "mindone_names", reference)) as f:
        expected = name_shapes(f)
    ours = name_shapes(param_lines(build_model(os.path.join(REPO, config), lazy_init=True)))
    assert len(expected) == count
    assert ours == expected, (sorted(ours - expected)[:5], sorted(expected - ours)[:5])


def test_train_config_with_recompute_has_the_same_parameters(fixtures_dir):
    config = "configs/v2-vpred-train.yaml"
    with open(os.path.join(fixtures_dir, "mindone_names", "mindspore_v2.txt")) as f:
        expected = name_shapes(f)
    assert name_shapes(param_lines(build_model(os.path.join(REPO, config), lazy_init=True))) == expected


def test_cli_prints_mindone_format():
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "list_params.py"), "--config",
                          os.path.join(REPO, "configs", "tiny-v2.yaml")], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight#(32, 32)#Float32" in lines
    assert "first_stage_model.encoder.norm_out.gamma#(64,)#Float32" in lines
    assert all(line.count("#") == 2 for line in lines) and lines == sorted(lines)


def test_cli_missing_config_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "list_params.py"), "--config",
                          str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "missing.yaml" in out.stderr
