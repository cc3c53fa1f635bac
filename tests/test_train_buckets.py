"""Training on data as people bring it: the tiny SD-2.x model trains a few steps on real photographs
(scikit-image's samples, kohya caption files) in aspect-ratio buckets with a held-out validation loss,
caption shuffling and TensorBoard; a bucketed run resumed mid-way equals an uninterrupted one."""
import csv
import os

import numpy as np
import pytest

from ldm.train.config import parse_config
from ldm.train.loop import TrainRun
from tests.test_buckets import PHOTOS, photo_folder
from tests.train_standin import write_standin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")


def _photos(root, names=PHOTOS):
    return photo_folder(root, names, extra_portrait=False)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tiny_model_trains_on_real_photos_in_buckets_with_validation_loss(tmp_path):
    out = tmp_path / "out"
    cfg = parse_config(["--model_config", TINY, "--data_path", str(_photos(tmp_path)), "--output_path", str(out),
                        "--image_size", "32", "--enable_bucket", "True", "--min_bucket_reso", "16",
                        "--max_bucket_reso", "64", "--train_batch_size", "1", "--max_steps", "3", "--epochs", "0",
                        "--validation_split", "0.34", "--validation_steps", "3", "--log_with", "tensorboard",
                        "--shuffle_caption", "True", "--keep_tokens", "1", "--caption_prefix", "sks",
                        "--start_learning_rate", "1e-3", "--show_progress", "False", "--seed", "5"])
    run = TrainRun(cfg)
    assert len(run.val_dataset) == 2 and len(run.dataset) == len(PHOTOS) - 2
    assert len(set(run.dataset.bucket_of)) >= 2                      # landscape and square photos
    summary = run.run()
    assert summary["global_step"] == 3 and np.isfinite(summary["last_loss"])
    rows = _rows(out / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    for r in rows:
        w, h = (int(v) for v in r["bucket"].split("x"))
        assert w % 4 == 0 and h % 4 == 0 and 16 <= min(w, h) and max(w, h) <= 64
        filled = [k for k in r if k.startswith("loss_t") and r[k] != ""]
        assert len(filled) == 1 and float(r[filled[0]]) == pytest.approx(float(r["loss"]), rel=1e-5)
    assert rows[2]["val_loss"] and np.isfinite(float(rows[2]["val_loss"])) and not rows[0]["val_loss"]
    assert run.validation.loss() == pytest.approx(float(rows[2]["val_loss"]), rel=1e-5)   # fixed draws
    events = [f for f in os.listdir(out / "tensorboard") if f.startswith("events.out.tfevents")]
    assert events and os.path.getsize(out / "tensorboard" / events[0]) > 0
    assert (out / "loss_curve.png").is_file() and (out / "ckpt" / "sd-step3.ckpt").is_file()
    batch = run.host_batch(0, 0)[0]
    assert batch["text"][0].startswith("sks ") or batch["text"][0] == ""      # prefix, then the kept first tag


def _standin_args(ws, out, *extra):
    return ["--model_config", ws["model"], "--data_path", ws["data"], "--output_path", str(out), "--image_size", "32",
            "--enable_bucket", "True", "--min_bucket_reso", "16", "--max_bucket_reso", "64", "--bucket_reso_steps", "8",
            "--train_batch_size", "2", "--start_learning_rate", "2e-3", "--show_progress", "False", "--seed", "3",
            "--epochs", "0", "--ckpt_save_interval", "2", "--step_mode", "True"] + [str(e) for e in extra]


def test_bucketed_run_resumed_midway_equals_an_uninterrupted_one(tmp_path):
    ws = dict(data=str(_photos(tmp_path, PHOTOS[:5])), model=write_standin_config(tmp_path))
    straight = TrainRun(parse_config(_standin_args(ws, tmp_path / "a", "--max_steps", "4")))
    assert len(straight.plan.resolutions) >= 2
    straight.run()
    TrainRun(parse_config(_standin_args(ws, tmp_path / "b", "--max_steps", "2"))).run()
    resumed = TrainRun(parse_config(_standin_args(ws, tmp_path / "b", "--max_steps", "4", "--resume", "True")))
    assert resumed.global_step == 2
    resumed.run()
    for p, q in zip(straight.trainable, resumed.trainable):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=p.name)
    a, b = _rows(tmp_path / "a" / "metrics.csv"), _rows(tmp_path / "b" / "metrics.csv")
    assert [(r["step"], r["bucket"], r["loss"]) for r in a] == [(r["step"], r["bucket"], r["loss"]) for r in b]


def test_one_graph_for_every_size_trains_as_a_graph_per_size(tmp_path):
    """Dynamic height/width (one compile for all buckets) gives the weights of per-bucket graphs."""
    ws = dict(data=str(_photos(tmp_path, PHOTOS[:5])), model=write_standin_config(tmp_path))
    runs = {}
    for flag in ("True", "False"):
        run = TrainRun(parse_config(_standin_args(ws, tmp_path / flag, "--max_steps", "3",
                                                  "--bucket_dynamic_shape", flag)))
        assert run.every_size == (flag == "True")
        run.run()
        runs[flag] = run
    for p, q in zip(runs["True"].trainable, runs["False"].trainable):
        np.testing.assert_allclose(p.asnumpy(), q.asnumpy(), rtol=1e-5, atol=1e-6, err_msg=p.name)


def test_buckets_with_cached_latents_and_gradient_accumulation(tmp_path):
    """The latent cache encodes every image in its bucket; accumulated micro-batches may mix buckets."""
    ws = dict(data=str(_photos(tmp_path, PHOTOS[:5])), model=write_standin_config(tmp_path))
    run = TrainRun(parse_config(_standin_args(ws, tmp_path / "out", "--max_steps", "2", "--cache_latents", "True",
                                              "--gradient_accumulation_steps", "2", "--train_batch_size", "1")))
    for i in range(len(run.dataset)):
        w, h = run.dataset.size_of(i)
        assert run.cache.mean[i].shape == (4, h // 8, w // 8)
    summary = run.run()
    assert summary["global_step"] == 2 and np.isfinite(summary["last_loss"])
    rows = _rows(tmp_path / "out" / "metrics.csv")
    assert all(r["bucket"] for r in rows)
