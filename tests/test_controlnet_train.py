"""ControlNet training (train_controlnet.py, ldm.train.controlnet) on the shipped demo base: a new ControlNet leaves
the base model's output unchanged at step 0 (zero convolutions); a short run has finite losses, moves only the
ControlNet and leaves every base weight bit-equal; a resumed run ends bit-equal to an uninterrupted one; the saved
file loads with load_controlnet and drives controlnet_image2image.py."""
import os
import shutil

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")
CONFIG = os.path.join(REPO, "configs", "tiny-shapes-controlnet.yaml")
STEPS = 4

pytestmark = pytest.mark.skipif(not os.path.isfile(BASE), reason="models/tiny_shapes_base.ckpt not built")


def _cfg(data, out, *extra):
    from ldm.train.controlnet import parse_config
    return parse_config(["--model_config", CONFIG, "--pretrained_model_path", BASE, "--data_path", data,
                         "--output_path", out, "--image_size", "32", "--train_batch_size", "4", "--max_steps",
                         str(STEPS), "--step_mode", "True", "--ckpt_save_interval", "2", "--warmup_steps", "0",
                         "--scheduler", "constant", "--start_learning_rate", "1e-3", "--use_ema", "True",
                         "--ema_decay", "0.9", "--random_flip", "True", "--show_progress", "False", "--seed", "0",
                         "--log_level", "WARNING", *extra])


def _state(params):
    return {p.name: p.asnumpy().copy() for p in params}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 4-step run (resume file copied at step 2), with what the checks need from before and after."""
    from mindspore import Tensor

    from datasets.synthetic_control import make_dataset
    from ldm.train.controlnet import ControlNetRun
    root = tmp_path_factory.mktemp("cn_train")
    data = make_dataset(str(root / "shapes"), num_train=8, num_test=2, size=32)
    saved_at_2 = str(root / "resume_at_2.ckpt")

    class Run(ControlNetRun):
        def save(self, tag):
            super().save(tag)
            if self.global_step == 2:
                shutil.copy(self.ckpts.resume_path, saved_at_2)

    run = Run(_cfg(os.path.join(data, "train"), str(root / "out")))
    base_before = _state(run.model.get_parameters())
    cn_before = _state(run.controlnet.get_parameters())
    # step 0: the controlled UNet is the base UNet (every residual exactly 0)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    t = Tensor(np.array([900, 50], np.int32))
    context = Tensor(rng.standard_normal((2, 77, 64)).astype(np.float32))
    hint = Tensor(rng.uniform(0, 1, (2, 3, 32, 32)).astype(np.float32))
    residuals = run.controlnet(x, t, context, hint)
    at_start = dict(zero=all(not np.any(r.asnumpy()) for r in residuals),
                    controlled=run.objective.denoise(x, t, context, hint).asnumpy(),
                    base=run.model.apply_model(x, t, context).asnumpy())
    summary = run.run()
    out = dict(run=run, root=root, data=data, summary=summary, base_before=base_before, cn_before=cn_before,
               base_after=_state(run.model.get_parameters()), cn_after=_state(run.controlnet.get_parameters()),
               ema_after=_state(run.ema.shadow), state_after=_state(run.state_params()), at_start=at_start)
    with open(root / "out" / "metrics.csv", encoding="utf-8") as f:
        out["metrics"] = f.read()
    # resume: the step-2 file into the same run (its compiled steps), then steps 3 and 4 again
    from ldm.train.checkpoint import load_resume
    meta = load_resume(saved_at_2, run.state_params())
    run.global_step = meta["global_step"]
    out["resumed_at"] = run.global_step
    run.loop(None)
    out["state_resumed"] = _state(run.state_params())
    return out


def test_starts_as_the_base_model(trained):
    start = trained["at_start"]
    assert start["zero"]
    np.testing.assert_array_equal(start["controlled"], start["base"])


def test_only_the_controlnet_moves(trained):
    import csv
    import io
    summary, out = trained["summary"], trained["root"] / "out"
    assert summary["global_step"] == STEPS and np.isfinite(summary["last_loss"])
    losses = [float(row["loss"]) for row in csv.DictReader(io.StringIO(trained["metrics"])) if row.get("loss")]
    assert len(losses) == STEPS and np.isfinite(losses).all()
    before, after = trained["base_before"], trained["base_after"]
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    cn_before, cn_after = trained["cn_before"], trained["cn_after"]
    assert all(k.startswith("control_model.") for k in cn_after)
    moved = [k for k in cn_after if not np.array_equal(cn_before[k], cn_after[k])]
    assert len(moved) == len(cn_after)              # AdamW moves every parameter (zero convs included)
    for name in ("args.yaml", "loss_curve.png", "ckpt/train_resume.ckpt", "ckpt/model_config.yaml"):
        assert (out / name).is_file(), name


def test_resume_is_bit_equal(trained):
    """train_resume.ckpt of step 2 holds everything the loop carries: loaded into the run, steps 3 and 4 end where
    the uninterrupted run ended (ControlNet, optimiser state, EMA, loss scale), bit for bit."""
    assert trained["resumed_at"] == 2
    after, resumed = trained["state_after"], trained["state_resumed"]
    assert after.keys() == resumed.keys() and any(k.startswith("ema.") for k in after)
    different = [k for k in after if not np.array_equal(after[k], resumed[k])]
    assert not different, different[:5]


def test_saved_controlnet_loads_and_drives_controlnet_image2image(trained, tmp_path, monkeypatch):
    import controlnet_image2image as cli
    from ldm.convert.controlnet import load_controlnet
    from ldm.util import load_config
    ckpt = trained["root"] / "out" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("sd-*_controlnet.ckpt")) == ["sd-2_controlnet.ckpt",
                                                                         "sd-4_controlnet.ckpt"]
    config = load_config(str(ckpt / "model_config.yaml"))
    assert config["model"]["params"]["control_stage_config"]["params"]["hint_block_channels"] == [16, 32, 32]
    net = load_controlnet(str(ckpt / "sd-4_controlnet.ckpt"), config)
    ema = trained["ema_after"]
    for p in net.get_parameters():                   # the saved weights are the EMA weights
        np.testing.assert_array_equal(p.asnumpy(), ema["ema.control_model." + p.name])
    monkeypatch.chdir(tmp_path)
    control = os.path.join(trained["data"], "test", "source", "00000.png")
    argv = ["--config", str(ckpt / "model_config.yaml"), "--ckpt_path", BASE, "--controlnet",
            str(ckpt / "sd-4_controlnet.ckpt"), "--control_image", control, "--prompt",
            "a red circle on a white background", "--a_prompt", "", "--image_resolution", "32",
            "--sampling_steps", "2", "--n_samples", "1", "--output_path", "out", "--task_name", "",
            "--sampler", "ddim", "--ms_mode", "1", "--log_level", "WARNING"]
    assert cli.main(argv) == 0
    assert (tmp_path / "out" / "samples" / "00000.png").is_file()
