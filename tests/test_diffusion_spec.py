"""One DiffusionSpec from the model YAML to every consumer: resolve_spec's precedence, and the same
alphas_cumprod in training's noising, every txt2img sampler, img2img and validation images."""
import ast
import copy
import glob
import os

import numpy as np
import pytest

from ldm.diffusion.samplers import SAMPLER_NAMES
from ldm.diffusion.spec import (DiffusionSpec, check_recorded_spec, recorded_spec, resolve_spec, spec_record,
                                with_spec)
from ldm.errors import UserError
from ldm.util import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_EPS = os.path.join(REPO, "configs", "tiny-v2.yaml")


# ---------------------------------------------------------------- resolve_spec
def test_precedence_override_over_yaml_over_defaults():
    assert resolve_spec() == DiffusionSpec()
    cfg = load_config(TINY_EPS)
    cfg["model"]["params"].update(rescale_zero_snr=True, scale_factor=0.5)
    spec = resolve_spec(cfg)
    assert (spec.prediction_type, spec.rescale_zero_snr, spec.scale_factor) == ("eps", True, 0.5)
    spec = resolve_spec(cfg, prediction_type="v", rescale_zero_snr=None, scale_factor=None)
    assert (spec.prediction_type, spec.rescale_zero_snr, spec.scale_factor) == ("v", True, 0.5)
    assert resolve_spec(cfg, rescale_zero_snr=False).rescale_zero_snr is False
    with pytest.raises(UserError, match="unknown diffusion setting"):
        resolve_spec(cfg, prediction="v")


def test_yaml_spellings():
    """MindONE's parameterization: velocity, LDM's "linear" (= scaled_linear with its start/end),
    and "cosine"/"squaredcos" for diffusers' squaredcos_cap_v2."""
    section = {"params": {"parameterization": "velocity", "linear_start": 0.001, "linear_end": 0.02,
                          "beta_schedule": "linear", "timesteps": 500}}
    spec = resolve_spec(section)
    assert (spec.prediction_type, spec.beta_schedule, spec.num_train_timesteps) == ("v", "scaled_linear", 500)
    assert resolve_spec({"params": {"beta_schedule": "linear"}}).beta_schedule == "linear"
    assert resolve_spec({"params": {"beta_schedule": "cosine"}}).beta_schedule == "squaredcos_cap_v2"
    with pytest.raises(UserError, match="prediction_type"):
        resolve_spec({"prediction_type": "flow", "params": {}})


def test_record_round_trip_and_mismatch_message():
    spec = DiffusionSpec(prediction_type="v", rescale_zero_snr=True, scale_factor=0.45)
    entry = spec_record(spec)
    assert recorded_spec({k: np.array(v) for k, v in entry.items()}) == spec      # as the reader returns it
    assert recorded_spec({"model.x": np.zeros(1)}) is None
    check_recorded_spec(spec.replace(scale_factor=0.1), spec, "a.yaml", "b.ckpt")   # scale is not checked
    with pytest.raises(UserError) as err:
        check_recorded_spec(DiffusionSpec(), spec, "a.yaml", "b.ckpt")
    message = str(err.value)
    assert "prediction_type=v" in message and "prediction_type=eps" in message and "\n" not in message
    written = with_spec(load_config(TINY_EPS), spec)
    assert resolve_spec(written) == spec


def test_training_starts_from_a_checkpoint_of_another_objective(tmp_path):
    """An eps base fine-tuned to v (the demo, MindONE's v2 v-pred recipe): the base's recorded spec binds
    inference with an explicit config, never a training run's starting weights."""
    from ldm.convert.checkpoint import load_model
    from ldm.io.ms_checkpoint import atomic_save
    from ldm.train.config import parse_config
    from ldm.train.loop import build_training_model
    base = load_model(TINY_EPS)
    path = str(tmp_path / "eps_base.ckpt")
    atomic_save(list(base.get_parameters()), path, append_dict=spec_record(base.spec))
    v_config = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")
    with pytest.raises(UserError):                                     # inference: config vs record
        load_model(v_config, path)
    cfg = parse_config(["--model_config", v_config, "--pretrained_model_path", path, "--data_path", str(tmp_path),
                        "--output_path", str(tmp_path / "out")])
    model, _ = build_training_model(cfg)
    assert model.spec.prediction_type == "v"


# ---------------------------------------------------------------- one schedule everywhere
COMBOS = [(schedule, zero, pred) for schedule in ("scaled_linear", "linear", "squaredcos_cap_v2")
          for zero in (False, True) for pred in ("eps", "v")]


def _model_config(schedule, zero, pred):
    cfg = load_config(TINY_EPS)
    params = cfg["model"]["params"]
    cfg["model"]["prediction_type"] = pred
    params.update(beta_schedule=schedule, rescale_zero_snr=zero)
    if schedule != "scaled_linear":
        del params["linear_start"], params["linear_end"]      # LDM's "linear" + start/end means scaled
    return cfg


def _standin_config(folder, schedule, zero, pred):
    from tests.train_standin import STANDIN_YAML
    import yaml
    cfg = yaml.safe_load(STANDIN_YAML)
    cfg["model"]["prediction_type"] = pred
    cfg["model"]["params"] = {"scale_factor": 0.5, "beta_schedule": schedule, "rescale_zero_snr": zero}
    path = os.path.join(str(folder), f"standin_{schedule}_{zero}_{pred}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from tests.train_standin import make_shapes
    return make_shapes(tmp_path_factory.mktemp("spec_shapes"), num_train=4)


@pytest.mark.parametrize("schedule,zero,pred", COMBOS, ids=[f"{s}-{'zsnr' if z else 'plain'}-{p}" for s, z, p in COMBOS])
def test_training_samplers_img2img_and_validation_share_one_schedule(schedule, zero, pred, shapes, tmp_path):
    import mindspore as ms
    from ldm.models.latent_diffusion import build_model
    from ldm.pipeline import Text2ImagePipeline
    from ldm.train.config import parse_config
    from ldm.train.loop import TrainRun

    config = _model_config(schedule, zero, pred)
    expected = resolve_spec(config).schedule.alphas_cumprod
    assert (expected[-1] == 0.0) == zero
    if schedule == "linear" and not zero:       # really diffusers' linear betas, not LDM's scaled one
        assert np.allclose(np.cumprod(1 - np.linspace(0.00085, 0.012, 1000))[:5], expected[:5])

    # training: the objective's abar_t, looked up for every sample of a batch; validation: the run's sampler
    made = []

    def make_sampler(model, model_config):
        made.append(Text2ImagePipeline(model, model_config, compile=False))
        return made[-1]

    argv = ["--model_config", _standin_config(tmp_path, schedule, zero, pred), "--data_path", shapes,
            "--output_path", str(tmp_path / "run"), "--image_size", "32", "--train_batch_size", "4",
            "--max_steps", "1", "--jit", "False", "--show_progress", "False",
            "--validation_prompts", "a red circle", "--validation_steps", "1", "--validation_sampler", "ddim"]
    if zero and pred == "eps":      # an eps model has no x0 at SNR 0: training it is refused up front
        with pytest.raises(UserError, match="prediction_type eps .*with rescale_zero_snr True"):
            parse_config(argv)
    else:
        run = TrainRun(parse_config(argv), make_sampler)
        batch, _, terms = run.host_batch(0, 0)
        np.testing.assert_array_equal(terms.alphas_cumprod, expected[batch["t"]].astype(np.float32))
        assert run.schedule.alphas_cumprod is run.model.spec.schedule.alphas_cumprod
        np.testing.assert_array_equal(run.schedule.alphas_cumprod, expected)
        validation = made[0].make_sampler("ddim")
        np.testing.assert_array_equal(validation.schedule.alphas_cumprod, expected)
        assert validation.timestep_spacing == ("trailing" if zero else "leading")

    # txt2img: every sampler the pipeline makes for this model
    ms.set_seed(0)
    pipe = Text2ImagePipeline(build_model(config), config, compile=False)
    for name in SAMPLER_NAMES:
        smp = pipe.make_sampler(name)
        np.testing.assert_array_equal(smp.schedule.alphas_cumprod, expected, err_msg=name)
        assert smp.prediction_type == pred

    # img2img: the noise level of the first call comes from the same array
    used = []
    make = pipe.make_sampler
    pipe.make_sampler = lambda *a, **k: used.append(make(*a, **k)) or used[-1]
    image = np.full((32, 32, 3), 128, np.uint8)
    pipe.generate("a red circle", width=32, height=32, steps=4, sampler="euler" if pred == "eps" and zero else "ddim",
                  scale=1.0, seed=0, init_image=image, strength=0.5)
    smp = used[0]
    np.testing.assert_array_equal(smp.schedule.alphas_cumprod, expected)
    start = 2 * max(1, len(smp.timesteps) // 4)
    if smp.name == "ddim":
        assert smp.noise_level(start) == pytest.approx(expected[int(smp.timesteps[start])], rel=1e-12)


# ---------------------------------------------------------------- imports run downhill
def _imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder,forbidden", [
    ("ldm/train", ("ldm.pipeline",)),
    ("ldm/pipeline*.py", ("ldm.train",)),
    ("ldm/models", ("ldm.train", "ldm.pipeline")),
    ("ldm/diffusion", ("ldm.train", "ldm.pipeline", "ldm.models", "ldm.convert")),
    ("ldm/convert", ("ldm.train", "ldm.pipeline")),
    ("ldm/io", ("ldm.train", "ldm.pipeline", "ldm.models")),
])
def test_imports_run_downhill(folder, forbidden):
    pattern = os.path.join(REPO, folder)
    files = glob.glob(pattern) if pattern.endswith(".py") else glob.glob(os.path.join(pattern, "*.py"))
    assert files
    bad = [(os.path.relpath(f, REPO), m) for f in files for m in sorted(_imported_modules(f))
           if any(m == p or m.startswith(p + ".") or m.startswith(p + "_") for p in forbidden)]
    assert not bad, f"upward imports: {bad}"
