"""LatentDiffusion wrapper: config handling, schedule, latent scaling and delegation to the three networks."""
import copy
import os

import numpy as np
import pytest

import mindspore as ms

from ldm.errors import UserError
from ldm.models.latent_diffusion import build_model
from ldm.util import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_V = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")


@pytest.fixture(scope="module")
def model():
    return build_model(TINY_V)


def test_prediction_type_and_schedule(model):
    assert model.prediction_type == "v"
    sched = model.schedule
    assert sched.num_train_timesteps == 1000 and sched.betas.dtype == np.float64
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2  # SD's scaled_linear
    np.testing.assert_allclose(sched.betas, betas, rtol=1e-12)
    np.testing.assert_allclose(sched.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-12)
    assert model.scale_factor == pytest.approx(0.18215) == model.spec.scale_factor
    assert model.spec.rescale_zero_snr is False


def test_eps_config_and_mindone_parameterization_key():
    assert build_model(os.path.join(REPO, "configs", "tiny-v2.yaml"), lazy_init=True).prediction_type == "eps"
    cfg = load_config(TINY_V)
    del cfg["model"]["prediction_type"]
    cfg["model"]["params"]["parameterization"] = "velocity"  # MindONE's spelling
    assert build_model(cfg, lazy_init=True).prediction_type == "v"


def test_parameter_prefixes_and_frozen_parts(model):
    names = [p.name for p in model.get_parameters()]
    assert {n.split(".")[0] for n in names} == {"model", "first_stage_model", "cond_stage_model"}
    assert all(n.startswith("model.diffusion_model.") for n in names if n.startswith("model."))
    trainable = {p.name for p in model.trainable_params()}
    assert trainable == {n for n in names if n.startswith("model.diffusion_model.")}
    assert model.diffusion_model is model.model.diffusion_model


def test_text_to_context(model):
    tokens = model.tokenize(["a red cube", ""])
    assert tokens.shape == (2, 77) and tokens.dtype == np.int32
    context = model.get_learned_conditioning(ms.Tensor(tokens))
    assert context.shape == (2, 77, 32)


def test_apply_model_delegates_to_unet(model):
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    t = ms.Tensor(np.array([5, 700], np.int32))
    c = ms.Tensor(rng.standard_normal((2, 77, 32)).astype(np.float32))
    out = model.apply_model(x, t, c).asnumpy()
    assert out.shape == (2, 4, 8, 8)
    np.testing.assert_array_equal(out, model.diffusion_model(x, t, c).asnumpy())


def test_latent_scaling_round_trip(model):
    rng = np.random.default_rng(1)
    images = ms.Tensor(np.clip(rng.standard_normal((1, 3, 32, 32)), -1, 1).astype(np.float32))
    mean, logvar = model.encode_first_stage(images)
    assert mean.shape == (1, 4, 16, 16) and logvar.shape == mean.shape
    z = model.get_first_stage_encoding(mean, logvar).asnumpy()
    np.testing.assert_allclose(z, mean.asnumpy() * 0.18215, rtol=1e-6)
    noise = rng.standard_normal(mean.shape).astype(np.float32)
    z_noisy = model.get_first_stage_encoding(mean, logvar, ms.Tensor(noise)).asnumpy()
    expected = (mean.asnumpy() + np.exp(0.5 * logvar.asnumpy()) * noise) * 0.18215
    np.testing.assert_allclose(z_noisy, expected, rtol=1e-5, atol=1e-6)
    decoded = model.decode_first_stage(ms.Tensor(z)).asnumpy()
    np.testing.assert_allclose(decoded, model.first_stage_model.decode(mean).asnumpy(), rtol=1e-5, atol=1e-5)
    assert decoded.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("edit,message", [
    (lambda cfg: cfg["model"]["params"].pop("unet_config"), "unet_config"),
    (lambda cfg: cfg["model"].update(prediction_type="flow"), "prediction_type"),
    (lambda cfg: cfg["model"]["params"].update(beta_schedule="sigmoid"), "beta_schedule"),
    (lambda cfg: cfg["model"].pop("params"), "model.params"),
])
def test_bad_configs_raise_user_errors(edit, message):
    cfg = copy.deepcopy(load_config(TINY_V))
    edit(cfg)
    with pytest.raises(UserError, match=message):
        build_model(cfg, lazy_init=True)


def test_missing_config_file():
    with pytest.raises(UserError, match="not found"):
        build_model(os.path.join(REPO, "configs", "no-such.yaml"))
