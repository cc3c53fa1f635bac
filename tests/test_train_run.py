"""End-to-end training runs on CPU: the loss falls, checkpoints load, kill -9 + --resume reproduces
an uninterrupted run exactly, EMA and gradient accumulation behave."""
import os
import re
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ldm.io.ms_checkpoint import read_checkpoint
from ldm.train.config import parse_config
from ldm.train.loop import TrainRun
from ldm.train.trainer import timestep_terms
from tests.train_standin import make_shapes, write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train_text_to_image.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return dict(root=root, data=make_shapes(root / "shapes", num_train=16, size=32),
                model=write_standin_config(root))


def _args(ws, out, *extra):
    return ["--model_config", ws["model"], "--data_path", ws["data"], "--output_path", str(out),
            "--image_size", "32", "--train_batch_size", "4", "--start_learning_rate", "2e-3",
            "--show_progress", "False", "--seed", "3"] + [str(e) for e in extra]


def _fixed_eval_loss(run):
    """Objective on a fixed batch (fixed t and noise), to see learning through the sampling noise."""
    batch, noise, _ = run.host_batch(0, 0)
    t = np.array([100, 400, 700, 900], np.int32)
    terms = timestep_terms(run.schedule, t, run.prediction_type, 0.0)
    latents, cond = run.step_fn.encode(Tensor(batch["image"]),
                                       Tensor(run.model.tokenize(batch["text"])), Tensor(batch["vae_noise"]))
    return float(run.objective(latents, cond, Tensor(t), Tensor(noise), *[Tensor(a) for a in terms]).asnumpy())


def test_finetune_loss_falls_and_outputs_exist(workspace, tmp_path):
    cfg = parse_config(_args(workspace, tmp_path, "--epochs", "10", "--drop_text_prob", "0.0"))
    run = TrainRun(cfg)
    before = _fixed_eval_loss(run)
    summary = run.run()
    after = _fixed_eval_loss(run)
    assert summary["global_step"] == 40
    assert after < 0.8 * before, (before, after)
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr") and len(rows) == 41
    assert os.path.getsize(tmp_path / "loss_curve.png") > 1000
    ckpts = sorted(os.listdir(tmp_path / "ckpt"))
    assert "sd-10.ckpt" in ckpts and "train_resume.ckpt" in ckpts
    saved = read_checkpoint(str(tmp_path / "ckpt" / "sd-10.ckpt"))
    for p in run.model.get_parameters():
        np.testing.assert_array_equal(saved[p.name], p.asnumpy())
    assert any(k.startswith("model.diffusion_model.") for k in saved)


def _weights(path):
    return read_checkpoint(path)


def test_kill_9_then_resume_equals_uninterrupted_run(workspace, tmp_path):
    common = ("--epochs", "20", "--step_mode", "True", "--ckpt_save_interval", "8", "--use_ema", "True",
              "--ema_decay", "0.9", "--scheduler", "cosine_decay", "--warmup_steps", "3", "--snr_gamma", "5",
              "--noise_offset", "0.1")
    full = tmp_path / "full"
    subprocess.run([sys.executable, TRAIN] + _args(workspace, full, *common), check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, TRAIN] + _args(workspace, killed, *common), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume_file = killed / "ckpt" / "train_resume.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if resume_file.exists():
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "ckpt" / "sd-80.ckpt").exists()
    done = subprocess.run([sys.executable, TRAIN] + _args(workspace, killed, *common, "--resume", "True"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_at = int(re.search(r"resumed from .* at step (\d+)", done.stderr).group(1))
    assert 8 <= resumed_at < 80 and resumed_at % 8 == 0
    a = _weights(str(full / "ckpt" / "sd-80.ckpt"))
    b = _weights(str(killed / "ckpt" / "sd-80.ckpt"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra = _weights(str(full / "ckpt" / "train_resume.ckpt"))
    rb = _weights(str(killed / "ckpt" / "train_resume.ckpt"))
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    assert any(k.startswith("adam_m.") for k in ra) and any(k.startswith("ema.") for k in ra)
    steps = [int(r.split(",")[0]) for r in open(killed / "metrics.csv").read().split()[1:]]
    assert steps == list(range(1, 81))


def test_ema_weights_are_saved_as_main_weights(workspace, tmp_path):
    cfg = parse_config(_args(workspace, tmp_path, "--max_steps", "3", "--use_ema", "True", "--ema_decay", "0.5",
                             "--jit", "False"))
    run = TrainRun(cfg)
    run.run()
    saved = read_checkpoint(str(tmp_path / "ckpt" / "sd-step3.ckpt"))
    resume = read_checkpoint(str(tmp_path / "ckpt" / "train_resume.ckpt"))
    name = run.trainable[0].name
    np.testing.assert_array_equal(saved[name], resume["ema." + name])
    np.testing.assert_array_equal(resume[name], run.trainable[0].asnumpy())
    assert not np.array_equal(saved[name], resume[name])


def test_gradient_accumulation_equals_larger_batch(workspace, tmp_path):
    def final(out, *extra):
        cfg = parse_config(_args(workspace, out, "--max_steps", "2", "--optim", "sgd", "--weight_decay", "0",
                                 *extra))
        run = TrainRun(cfg)
        run.run()
        return {p.name: p.asnumpy() for p in run.trainable}
    big = final(tmp_path / "big")
    acc = final(tmp_path / "acc", "--train_batch_size", "2", "--gradient_accumulation_steps", "2")
    for k in big:
        np.testing.assert_allclose(acc[k], big[k], atol=1e-6, err_msg=k)


def test_validation_images_are_written(tmp_path):
    import argparse
    from ldm.models.latent_diffusion import build_model
    from ldm.pipeline import Text2ImagePipeline
    from ldm.train.validation import write_validation_images
    from ldm.util import load_config
    config = load_config(os.path.join(REPO, "configs", "tiny-v2-vpred.yaml"))
    ms.set_seed(0)
    pipe = Text2ImagePipeline(build_model(config), config, compile=False)
    cfg = argparse.Namespace(validation_prompts=["a red circle", "a blue square"], image_size=32,
                             validation_sampling_steps=2, validation_sampler="ddim", validation_guidance_scale=3.0,
                             seed=1, output_path=str(tmp_path))
    paths = write_validation_images(pipe, cfg, 5)
    assert [os.path.basename(p) for p in paths] == ["step5_0.png", "step5_1.png"]
    from PIL import Image
    saved = np.asarray(Image.open(paths[1]))
    expected = pipe(["a red circle", "a blue square"], width=32, height=32, steps=2, sampler="ddim", scale=3.0, seed=1)
    np.testing.assert_array_equal(saved, expected[1])


def test_cache_latents_trains_and_matches_uncached_first_step(workspace, tmp_path):
    """Without random crop/flip the cached and uncached runs see the same data: same first loss."""
    def first_loss(out, cache):
        cfg = parse_config(_args(workspace, out, "--max_steps", "2", "--cache_latents", str(cache), "--jit", "False"))
        run = TrainRun(cfg)
        run.run()
        return [float(r.split(",")[2]) for r in open(out / "metrics.csv").read().split()[1:]]
    cached, plain = first_loss(tmp_path / "c", True), first_loss(tmp_path / "p", False)
    np.testing.assert_allclose(cached, plain, rtol=1e-5)
