"""End-to-end parity of ControlNetPipeline with diffusers' StableDiffusionControlNetPipeline on the tiny random
pipelines (tests/fixtures/make_controlnet_fixtures.py): same weights, latents, prompts and control images ->
uint8 images within 2/255 and final latents within 1e-3 of their scale; SD 1.x-style eps with DDIM (plain, and
guess mode at conditioning scale 0.8), SD 2.x-style v with Euler (a 128 px control image resized to 64) and with
DPM-Solver++ and two ControlNets (scales 0.6 / 1.0, guidance windows [0, 0.8] / [0.2, 1]). Then: the control is
additive for every kind of sampler (scale 0 = diffusers without ControlNet), micro-batches, the input rules."""
import logging
import os

import numpy as np
import pytest

import controlnet_helpers as H
from ldm.convert.checkpoint import load_model
from ldm.convert.controlnet import load_controlnet
from ldm.convert.diffusers import diffusers_model_config
from ldm.errors import UserError
from ldm.pipeline_controlnet import ControlNetPipeline, guidance_keep
from pipeline_models import PIPELINE_FIXTURES

S = H.SETTINGS
CASES = {c["case"]: c for c in S["cases"]}
MAX_PIXEL_DIFF = 2
PLAIN = np.load(os.path.join(PIPELINE_FIXTURES, "references.npz"))     # the same pipelines without ControlNet


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """{style: compiled ControlNetPipeline}, one base model per style (every graph compiles once and serves all
    the tests of its pipeline)."""
    root = tmp_path_factory.mktemp("cn-pipes")
    out = {}
    for style in ("sd1", "sd2"):
        folder = os.path.join(PIPELINE_FIXTURES, style)
        cfg = diffusers_model_config(folder)
        model = load_model(cfg, folder)
        nets = [load_controlnet(H.diffusers_folder(style, seed, str(root / f"{style}-{seed}")), cfg) for seed in (1, 2)]
        # sd1: one ControlNet; sd2: two, the second at conditioning scale 0 where a case has one (adding 0 * its
        # residuals leaves the numbers as they are; one graph fewer to compile)
        out[style] = ControlNetPipeline(model, nets[:1] if style == "sd1" else nets, cfg)
    return out


def _run(pipe, case, **over):
    c = dict(CASES[case], **over)
    pipe.model.set_spec(pipe.spec.replace(prediction_type=c["prediction_type"]))
    keys = c["image"] if isinstance(c["image"], list) else [c["image"]]
    image = [H.REFS["control_" + k] for k in keys] if isinstance(c["image"], list) else H.REFS["control_" + keys[0]]
    if len(pipe.controlnets) == 2 and not isinstance(c["image"], list):       # the second ControlNet off
        image, c["scale"] = [image, image], [c.get("scale", 1.0), 0.0]
    return pipe.generate(S["prompt"], negative_prompt=S["negative_prompt"], width=S["width"], height=S["height"],
                         steps=c.get("steps", S["steps"]), sampler=c["sampler"], scale=S["scale"], seed=c.get("seed"),
                         latents=H.REFS["latents"], control_image=image,
                         controlnet_conditioning_scale=c.get("scale", 1.0), guess_mode=c.get("guess_mode", False),
                         control_guidance_start=c.get("start", 0.0), control_guidance_end=c.get("end", 1.0))


@pytest.mark.parametrize("case", sorted(CASES))
def test_images_match_diffusers(case, pipes):
    c = CASES[case]
    result = _run(pipes[c["style"]], case)
    ref_latents = H.REFS[case + "_final_latents"]
    err = np.abs(result.latents - ref_latents).max()
    assert err <= 1e-3 * max(1.0, np.abs(ref_latents).max()), f"{case}: final latents differ by {err}"
    diff = np.abs(result.images.astype(np.int16) - H.REFS[case].astype(np.int16))
    assert diff.max() <= MAX_PIXEL_DIFF, f"{case}: max diff {diff.max()}, mean {diff.mean():.3f}"


def test_references_depend_on_the_control():
    """Guard against fixtures where the ControlNet would not matter: the control changes the picture (against
    the same pipeline without ControlNet), and so does guess mode."""
    plain = PLAIN["sd1_ddim_eps"].astype(int)
    assert np.abs(H.REFS["sd1_ddim_eps"].astype(int) - plain).max() > 20
    assert np.abs(H.REFS["sd1_ddim_eps"].astype(int) - H.REFS["sd1_ddim_eps_guess"].astype(int)).max() > 20


@pytest.mark.parametrize("sampler", ["plms", "uni_pc", "dpm_solver", "heun", "euler_a", "mindone_dpm_solver_pp"])
def test_every_kind_of_sampler(sampler, pipes):
    """The control only enters the denoiser: at conditioning scale 0 the ControlNet pipeline gives diffusers'
    images without ControlNet (PLMS with its extra warm-up call, UniPC, DPM-Solver++: tests/fixtures/pipeline);
    samplers with two calls per step (Heun), noise (Euler a) or MindONE's continuous time change with the control."""
    pipe = pipes["sd2"]
    key = f"sd2_{sampler}_v"
    steps = S["steps"] if key in PLAIN.files else 2
    zero = _run(pipe, "sd2_euler_v", sampler=sampler, steps=steps, scale=0.0, seed=0)
    if key in PLAIN.files:
        ref = PLAIN[key + "_final_latents"]
        assert np.abs(zero.latents - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())
        assert np.abs(zero.images.astype(int) - PLAIN[key].astype(int)).max() <= MAX_PIXEL_DIFF
    control = _run(pipe, "sd2_euler_v", sampler=sampler, steps=steps, seed=0)
    assert np.isfinite(control.latents).all() and np.abs(control.latents - zero.latents).max() > 1e-2


def test_micro_batches_and_keep(pipes, monkeypatch):
    """With one image per UNet call every call gets its own rows of the control images (spied on the compiled
    call, which returns zeros here: no recompilation for the new shape); the guidance window follows diffusers'
    rule over the model calls."""
    pipe, calls = pipes["sd1"], []
    run = pipe._run

    def spy(name, *args):
        if not name.startswith("control_"):
            return run(name, *args)
        calls.append((args[0].shape[0], [h.asnumpy() for h in args[3]], args[4].asnumpy()))
        return args[0] * 0
    monkeypatch.setattr(pipe, "_run", spy)
    images = np.stack([H.REFS["control_a"], 255 - H.REFS["control_a"]])[..., None].repeat(3, axis=-1)
    pipe.set_micro_batches(unet=1)
    try:
        pipe.generate(["a", "b"], width=64, height=64, steps=2, sampler="ddim", latents=H.REFS["latents"],
                      control_image=images, control_guidance_start=0.5)
    finally:
        pipe.set_micro_batches()
    hints = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert [n for n, _, _ in calls] == [1, 1, 1, 1]
    for k, (_, (hint,), weights) in enumerate(calls):
        assert np.array_equal(hint, hints[k % 2:k % 2 + 1])
        assert np.all(weights == (0.0 if k < 2 else 1.0))          # call 0 of 2 lies before the window's start
    assert [guidance_keep(i, 5, 0.2, 0.8) for i in range(5)] == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_control_inputs(pipes, caplog):
    pipe = pipes["sd1"]
    kwargs = dict(width=64, height=64, steps=1, sampler="ddim", latents=H.REFS["latents"])
    with pytest.raises(UserError, match=r"control image is 64x32, the output 64x64: another aspect ratio"):
        pipe.generate("a", control_image=np.zeros((32, 64, 3), np.uint8), **kwargs)
    with pytest.raises(UserError, match="3 control images for 2 images"):
        pipe.generate("a", control_image=[np.zeros((64, 64, 3), np.uint8)] * 3, **kwargs)
    with pytest.raises(UserError, match="control_guidance_start 0.5 must be below control_guidance_end 0.5"):
        pipe.generate("a", control_image=H.REFS["control_a"], control_guidance_start=0.5, control_guidance_end=0.5,
                      **kwargs)
    with pytest.raises(UserError, match="2 values of controlnet_conditioning_scale for 1 ControlNet"):
        pipe.generate("a", control_image=H.REFS["control_a"], controlnet_conditioning_scale=[1, 1], **kwargs)
    with pytest.raises(UserError, match="2 control image entries for 1|a list with one per ControlNet"):
        pipes["sd2"].generate("a", control_image=H.REFS["control_a"], **kwargs)
    with caplog.at_level(logging.INFO, logger="ldm.control_inputs"):
        pipe.generate("a", control_image=np.zeros((128, 128), np.uint8), **kwargs)
    assert "control image 128x128 resized to 64x64" in caplog.text
