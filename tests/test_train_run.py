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
    return float(run.objective(latents, cond, Tensor(t), Tensor(noise.target), Tensor(noise.input),
                               *[Tensor(a) for a in (terms.alphas_cumprod, terms.huber_c, terms.weight)])[0].asnumpy())


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
    paths, _ = write_validation_images(pipe, cfg, 5)
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


def _bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_divergence_stops_with_one_line_and_keeps_the_last_good_files(workspace, tmp_path):
    """Two good steps save sd-2 + train_resume; the resumed run's loss overflows at step 3 (noise_offset
    1e38): exit 2, one line naming step 3 and the resume file, and every checkpoint byte-identical."""
    steps = ("--step_mode", "True", "--ckpt_save_interval", "2", "--jit", "False")
    TrainRun(parse_config(_args(workspace, tmp_path, "--max_steps", "2", *steps))).run()
    ckpt = tmp_path / "ckpt"
    before = _bytes(ckpt)
    assert {"sd-2.ckpt", "train_resume.ckpt"} <= set(before)
    proc = subprocess.run([sys.executable, TRAIN] + _args(workspace, tmp_path, "--max_steps", "4", *steps,
                                                          "--resume", "True", "--noise_offset", "1e38",
                                                          "--log_level", "logging.ERROR"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "training diverged at step 3 (loss" in lines[0]
    assert f"last good checkpoint: {ckpt / 'train_resume.ckpt'}" in lines[0]
    assert _bytes(ckpt) == before


def test_non_finite_weights_are_never_saved(workspace, tmp_path):
    from ldm.train.loop import TrainingDiverged
    run = TrainRun(parse_config(_args(workspace, tmp_path, "--max_steps", "2", "--jit", "False")))
    run.run()
    ckpt = tmp_path / "ckpt"
    before = _bytes(ckpt)
    param = run.trainable[0]
    poisoned = param.asnumpy().copy()
    poisoned.flat[0] = np.nan
    param.set_data(Tensor(poisoned))
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 2 \(1 of \d+ state tensors not finite\); "
                                               r"last good checkpoint: .*sd-step2.ckpt"):
        run.save(3)
    assert _bytes(ckpt) == before


def test_mixed_modes_train_and_a_truncated_jpeg_is_skipped_and_counted(workspace, tmp_path, caplog):
    import io
    import logging
    from PIL import Image
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA")
    files = {"l.png": rgb.convert("L"), "rgba.png": rgba, "p.png": rgb.convert("P"), "cmyk.jpg": rgb.convert("CMYK"),
             "l.jpg": rgb.convert("L"), "rgb.jpg": rgb}
    for name, img in files.items():
        img.save(data / name)
    buf = io.BytesIO()
    rgb.resize((64, 64)).save(buf, "JPEG")
    (data / "cut.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    names = list(files) + ["cut.jpg"]
    (data / "img_txt.csv").write_text("dir,text\n" + "".join(f"{n},image {n}\n" for n in names))
    args = _args(workspace, tmp_path / "out", "--max_steps", "2", "--jit", "False", "--train_batch_size", "3")
    args[args.index("--data_path") + 1] = str(data)
    with caplog.at_level(logging.WARNING, logger="ldm"):
        run = TrainRun(parse_config(args))
        summary = run.run()
    assert run.dataset.skipped == {"corrupt or truncated": 1} and run.dataset.replaced == 1   # MindONE's top-up
    assert sorted({os.path.basename(r.path) for r in run.dataset.records}) == sorted(files)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipped 1 of 7 images (1 corrupt or truncated)" in w for w in warnings), warnings
    assert summary["global_step"] == 2 and np.isfinite(summary["last_loss"])
    assert (tmp_path / "out" / "ckpt" / "sd-1.ckpt").exists()   # 7 samples, batch 3: step 2 ends epoch 1


def test_a_failed_start_leaves_no_output_folder_and_no_ir_dump_in_the_working_folder(tmp_path, monkeypatch):
    from ldm.train.loop import no_leftovers
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), no_leftovers(str(out)):
        (out / "ckpt").mkdir(parents=True)
        (out / "args.yaml").write_text("a: 1\n")
        (tmp_path / "rank_0" / "om").mkdir(parents=True)
        (tmp_path / "rank_0" / "om" / "analyze_fail.ir").write_text("ir")   # what a failed ms.jit compile writes
        raise RuntimeError("compile failed")
    assert sorted(os.listdir(tmp_path)) == []
    (out / "ckpt").mkdir(parents=True)                  # a folder that existed before is never removed
    with pytest.raises(RuntimeError), no_leftovers(str(out)):
        raise RuntimeError("later failure")
    assert (out / "ckpt").is_dir()
