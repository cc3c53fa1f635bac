"""ldm.pipeline pieces that do not need a real model: guidance (compiled == eager == the formula),
per-image randomness independent of batching, argument checks."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ldm.diffusion.base import NoiseSource
from ldm.diffusion.guidance import apply_guidance
from ldm.errors import UserError
from ldm.pipeline import GuidedDenoiser, Text2ImagePipeline, initial_noise


class ToyModel(nn.Cell):
    """apply_model(x, t, context): a conv of x scaled by t plus a context-dependent per-sample term."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1, has_bias=True)

    def apply_model(self, x, t, context):
        return self.conv(x) * t.reshape(-1, 1, 1, 1) * context.mean(axis=(1, 2)).reshape(-1, 1, 1, 1)


def numpy_guidance(uncond, cond, scale, phi):
    """diffusers: noise_cfg = uncond + s (cond - uncond); rescale_noise_cfg with torch's unbiased std."""
    guided = uncond + scale * (cond - uncond)
    if phi:
        axes = (1, 2, 3)
        ratio = cond.std(axis=axes, keepdims=True, ddof=1) / guided.std(axis=axes, keepdims=True, ddof=1)
        guided = phi * guided * ratio + (1 - phi) * guided
    return guided


@pytest.mark.parametrize("phi", [0.0, 0.7])
def test_guided_denoiser_compiled_eager_and_formula_agree(phi):
    rng = np.random.default_rng(0)
    model = ToyModel()
    x = ms.Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    t = ms.Tensor(np.array([999.0, 999.0], np.float32))
    context = ms.Tensor(rng.standard_normal((4, 77, 8)).astype(np.float32) + 1.0)
    scale = ms.Tensor(7.5, ms.float32)
    rescale = ms.Tensor(phi, ms.float32) if phi else None
    den = GuidedDenoiser(model)
    eager = den(x, t, context, scale, rescale).asnumpy()
    compiled = ms.jit(den.construct)(x, t, context, scale, rescale).asnumpy()
    out = model.apply_model(ms.ops.cat((x, x)), ms.ops.cat((t, t)), context).asnumpy()
    expected = numpy_guidance(out[:2], out[2:], 7.5, phi)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1e-4)
    if phi:
        assert np.abs(expected - numpy_guidance(out[:2], out[2:], 7.5, 0.0)).max() > 1e-2


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_guidance_rescale_matches_formula(phi):
    """uncond == cond isolates the rescale: guided = cond, so the result is phi * g * std(c)/std(g) + (1-phi) g
    with g = uncond + s (cond - uncond); checked for numpy and MindSpore, with an unbiased-std reference."""
    rng = np.random.default_rng(1)
    u, c = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    c = 0.3 * c
    g = u + 4.0 * (c - u)
    ratio = c.std(axis=(1, 2, 3), keepdims=True, ddof=1) / g.std(axis=(1, 2, 3), keepdims=True, ddof=1)
    expected = phi * g * ratio + (1 - phi) * g
    np.testing.assert_allclose(apply_guidance(u, c, 4.0, phi), expected, rtol=1e-5, atol=1e-6)
    got = apply_guidance(ms.Tensor(u), ms.Tensor(c), 4.0, ms.Tensor(phi, ms.float32)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_randomness_is_per_image():
    """Image j's start noise and sampler noise depend on its seed only, not on its batch."""
    assert np.array_equal(initial_noise([10, 11], (4, 2, 2))[1], initial_noise([11], (4, 2, 2))[0])
    like = ms.Tensor(np.zeros((2, 4, 2, 2), np.float32))
    pair = NoiseSource([10, 11])(like).asnumpy()
    alone = NoiseSource([11])(like[:1]).asnumpy()
    assert np.array_equal(pair[1], alone[0])
    assert not np.array_equal(pair[0], pair[1])
    assert not np.array_equal(alone[0], initial_noise([11], (4, 2, 2))[0])   # separate streams


def test_argument_checks():
    with pytest.raises(UserError, match="multiple of 8"):
        Text2ImagePipeline.check_size(60, 64)
    prompts, negatives = Text2ImagePipeline._prompt_lists("a", None, 3, None)
    assert prompts == ["a"] * 3 and negatives == [""] * 3
    with pytest.raises(UserError, match="negative prompts"):
        Text2ImagePipeline._prompt_lists(["a", "b"], ["x"], None, None)
    assert Text2ImagePipeline._seeds(5, None, 3) == [5, 6, 7]
    with pytest.raises(UserError, match="seeds"):
        Text2ImagePipeline._seeds(None, [1], 2)


@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_generate_calls_back_once_per_model_call_with_the_sampler_loop_values(sampler):
    """callback(step, timestep, latents, pred_x0) sees every model call in order, its timestep is the
    sampler's, its latents are what the loop holds, and the last ones are the returned latents."""
    from tests.pipeline_models import pipeline
    pipe = pipeline("sd2")
    seen = []
    result = pipe.generate("a red circle", width=32, height=32, steps=3, sampler=sampler, scale=3.0, seed=5,
                           callback=lambda i, t, x, x0: seen.append((i, t, x.asnumpy(), x0)))
    smp = pipe.make_sampler(sampler).set_timesteps(3)
    assert [s[0] for s in seen] == list(range(len(smp.timesteps)))
    assert len(seen) == (3 if sampler == "ddim" else 5)
    np.testing.assert_array_equal([s[1] for s in seen], smp.timesteps.astype(float))
    np.testing.assert_array_equal(seen[-1][2], result.latents)
    assert all(s[3] is not None for s in seen) or sampler == "heun"
