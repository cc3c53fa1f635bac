"""What training produced is what inference uses: a tiny run trained with --rescale_zero_snr True,
then text_to_image.py given only the checkpoint samples with zero SNR and trailing timesteps; an eps
config given for that v checkpoint is one line and exit 2."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ldm.convert.readers import read_weight_file
from ldm.diffusion.spec import recorded_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _python(script, args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, script)] + args, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def zero_snr_run(tmp_path_factory):
    from tests.train_standin import make_shapes
    root = tmp_path_factory.mktemp("zsnr")
    data = make_shapes(root / "data", num_train=4)
    out = root / "run"
    # the model YAML says eps and no zero SNR; the recipe flags change both
    proc = _python("train_text_to_image.py", [
        "--model_config", os.path.join(REPO, "configs", "tiny-v2.yaml"), "--data_path", data,
        "--output_path", str(out), "--image_size", "32", "--train_batch_size", "4", "--max_steps", "1",
        "--prediction_type", "v", "--rescale_zero_snr", "True", "--jit", "False", "--show_progress", "False",
        "--step_mode", "True", "--ckpt_save_interval", "1"], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out / "ckpt" / "sd-1.ckpt"


def test_checkpoint_and_model_config_record_the_spec(zero_snr_run):
    _, ckpt = zero_snr_run
    spec = recorded_spec(read_weight_file(str(ckpt)))
    assert (spec.prediction_type, spec.rescale_zero_snr, spec.beta_schedule) == ("v", True, "scaled_linear")
    cfg = yaml.safe_load(open(ckpt.parent / "model_config.yaml", encoding="utf-8"))
    assert cfg["model"]["prediction_type"] == "v" and cfg["model"]["params"]["rescale_zero_snr"] is True


def test_text_to_image_without_config_uses_the_recorded_spec(zero_snr_run):
    root, ckpt = zero_snr_run
    out = root / "samples"
    proc = _python("text_to_image.py", ["--ckpt_path", str(ckpt), "--prompt", "a red circle", "--W", "32",
                                        "--H", "32", "--sampling_steps", "2", "--n_iter", "1", "--n_samples", "1",
                                        "--sampler", "ddim", "--output_path", str(out)], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(open(out / "manifest.jsonl", encoding="utf-8").readline())
    assert record["config"] == str(ckpt.parent / "model_config.yaml")
    assert (record["prediction_type"], record["rescale_zero_snr"], record["timestep_spacing"]) == ("v", True, "trailing")
    assert record["guidance_rescale"] == 0.7


def test_eps_config_for_a_v_checkpoint_is_one_line_exit_2(zero_snr_run):
    root, ckpt = zero_snr_run
    config = os.path.join(REPO, "configs", "tiny-v2.yaml")
    proc = _python("text_to_image.py", ["--ckpt_path", str(ckpt), "--config", config, "--W", "32", "--H", "32",
                                        "--sampling_steps", "2", "--output_path", str(root / "bad")], root)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "prediction_type=v, rescale_zero_snr=True" in lines[0] and "prediction_type=eps" in lines[0]
    assert "leave out --config" in lines[0]
    assert not (root / "bad" / "samples").exists()
