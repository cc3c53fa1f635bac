"""AutoencoderKL parity with diffusers' AutoencoderKL (tiny random model, fp32): encode and decode."""
import numpy as np
import pytest

import mindspore as ms

from unet_vae_helpers import build_vae, references

TOL = 1e-4


@pytest.fixture(scope="module")
def vae():
    return build_vae()


@pytest.fixture(scope="module")
def refs():
    return references()


def test_encode_matches_diffusers(vae, refs):
    mean, logvar = vae.encode(ms.Tensor(refs["vae_image"]))
    assert refs["vae_mean"].std() > 0.1 and refs["vae_logvar"].std() > 0.1
    assert np.abs(mean.asnumpy() - refs["vae_mean"]).max() <= TOL
    assert np.abs(logvar.asnumpy() - refs["vae_logvar"]).max() <= TOL


def test_decode_matches_diffusers(vae, refs):
    decoded = vae.decode(ms.Tensor(refs["vae_latent"])).asnumpy()
    assert decoded.shape == refs["vae_decoded"].shape
    assert np.abs(decoded - refs["vae_decoded"]).max() <= TOL


def test_posterior_sample_is_reparameterised(vae, refs):
    mean, logvar = vae.encode(ms.Tensor(refs["vae_image"]))
    noise = np.random.default_rng(0).standard_normal(mean.shape).astype(np.float32)
    z = vae.sample(mean, logvar, ms.Tensor(noise)).asnumpy()
    expected = refs["vae_mean"] + np.exp(0.5 * refs["vae_logvar"]) * noise
    assert np.abs(z - expected).max() <= TOL


def test_decode_graph_mode(vae, refs):
    out = ms.jit(vae.decode)(ms.Tensor(refs["vae_latent"]))  # the bound method, as ldm.pipeline compiles it
    assert np.abs(out.asnumpy() - refs["vae_decoded"]).max() <= TOL
