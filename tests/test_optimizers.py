"""kohya-ss's optimisers (lion, lamb, adafactor, prodigy), the per-group learning rates (unet_lr /
text_encoder_lr) in every optimiser, optimizer_args, the state-size report and cosine_with_restarts.

Each optimiser runs compiled (ms.jit, as training runs it) for several steps on a 1-D bias, a matrix and a
3x3 conv weight with random gradients and a changing rate, against its algorithm written here in float64
numpy from the papers / reference implementations (lion-pytorch, LAMB's Algorithm 2, transformers'
Adafactor, prodigyopt); resume through a real train_resume.ckpt continues bit for bit."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

from ldm.errors import UserError
from ldm.train.checkpoint import CheckpointManager, load_resume
from ldm.train.lr_schedule import build_lr_schedule
from ldm.train.optim import build_optimizer, state_nbytes
from ldm.train.optim_args import (group_lr_scales, optimizer_settings, parse_optimizer_args, state_bytes,
                                  state_shapes)

SHAPES = [(5,), (4, 6), (3, 2, 3, 3)]
STEPS = 5
LRS = [0.01 * (1 + 0.3 * k) for k in range(STEPS)]
SCALES = [1.0, 0.5, 2.0]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    inits = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]
    return inits, grads


def _run(name, options, inits, grads, lrs, scales=None, opt_state=None, start=0):
    """Weights after running optimiser ``name`` compiled over ``grads[start:]`` (state from ``opt_state``, a
    resume file to load first); returns (weights, params, optimizer)."""
    params = [Parameter(Tensor(w.copy()), name=f"net.p{i}") for i, w in enumerate(inits)]
    opt = build_optimizer(name, params, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, options=options,
                          lr_scales=scales)
    if opt_state is not None:
        load_resume(opt_state, _state(params, opt))
    step = ms.jit(opt.construct)
    for g, lr in zip(grads[start:], lrs[start:]):
        step(ms.mutable(tuple(Tensor(x) for x in g)), Tensor(np.float32(lr)))
    return [p.asnumpy() for p in params], params, opt


def _state(params, opt):
    seen, out = set(), []
    for p in list(params) + list(opt.get_parameters()):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


# ---------------------------------------------------------------- float64 references
def ref_lion(inits, grads, lrs, scales, beta1=0.9, beta2=0.99, wd=0.1):
    w = [x.astype(np.float64) for x in inits]
    m = [np.zeros_like(x) for x in w]
    for g_step, lr in zip(grads, lrs):
        for i, g in enumerate(g_step):
            rate = lr * scales[i]
            update = np.sign(beta1 * m[i] + (1 - beta1) * g)
            w[i] = w[i] * (1 - rate * wd) - rate * update
            m[i] = beta2 * m[i] + (1 - beta2) * g
    return w


def ref_lamb(inits, grads, lrs, scales, beta1=0.9, beta2=0.99, eps=1e-8, wd=0.1):
    w = [x.astype(np.float64) for x in inits]
    m, v = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w]
    for t, (g_step, lr) in enumerate(zip(grads, lrs), start=1):
        for i, g in enumerate(g_step):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            u = (m[i] / (1 - beta1 ** t)) / (np.sqrt(v[i] / (1 - beta2 ** t)) + eps) + wd * w[i]
            wn, un = np.linalg.norm(w[i]), np.linalg.norm(u)
            trust = wn / un if wn > 0 and un > 0 else 1.0
            w[i] = w[i] - lr * scales[i] * trust * u
    return w


def ref_adafactor(inits, grads, lrs, scales, eps=(1e-30, 1e-3), clip=1.0, decay_rate=-0.8, beta1=None, wd=0.1,
                  scale_parameter=True, relative_step=True, warmup_init=False):
    """transformers.optimization.Adafactor.step, per parameter, in float64."""
    rms = lambda x: np.sqrt(np.mean(x * x))  # noqa: E731
    w = [x.astype(np.float64) for x in inits]
    state = [dict(row=np.zeros(x.shape[:-1]), col=np.zeros(x.shape[:-2] + x.shape[-1:]), v=np.zeros(x.shape),
                  m=np.zeros(x.shape)) for x in w]
    for t, (g_step, lr) in enumerate(zip(grads, lrs), start=1):
        for i, g in enumerate(g_step):
            g = g.astype(np.float64)
            st = state[i]
            step_size = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t)) if relative_step else lr * scales[i]
            rate = (max(eps[1], rms(w[i])) if scale_parameter else 1.0) * step_size
            beta2t = 1.0 - t ** decay_rate
            sq = g * g + eps[0]
            if g.ndim >= 2:
                st["row"] = beta2t * st["row"] + (1 - beta2t) * sq.mean(-1)
                st["col"] = beta2t * st["col"] + (1 - beta2t) * sq.mean(-2)
                r = 1 / np.sqrt(st["row"] / st["row"].mean(-1, keepdims=True))
                update = r[..., None] * (1 / np.sqrt(st["col"]))[..., None, :] * g
            else:
                st["v"] = beta2t * st["v"] + (1 - beta2t) * sq
                update = g / np.sqrt(st["v"])
            update = update / max(rms(update) / clip, 1.0) * rate
            if beta1 is not None:
                st["m"] = beta1 * st["m"] + (1 - beta1) * update
                update = st["m"]
            w[i] = w[i] - wd * rate * w[i] - update
    return w


def ref_prodigy(inits, grads, lrs, scales, betas=(0.9, 0.99), beta3=None, eps=1e-8, wd=0.1, decouple=True,
                use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=math.inf,
                slice_p=1, store=np.float64):
    """prodigyopt.Prodigy.step in float64, each parameter's dlr times its lr multiplier; ``store``: the
    dtype the weights are rounded to after each step (float32: as a run keeps them)."""
    beta1, beta2 = betas
    beta3 = math.sqrt(beta2) if beta3 is None else beta3
    w = [x.astype(np.float64) for x in inits]
    m, v = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w]
    s = [np.zeros_like(x.ravel()[::slice_p]) for x in w]
    p0 = [x.ravel()[::slice_p].copy() for x in w]
    d, d_max, num, k = d0, d0, 0.0, 0
    for g_step, lr in zip(grads, lrs):
        bc = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1)) if use_bias_correction else 1.0
        dlr = d * lr * bc
        numerator, denom = num * beta3, 0.0
        gs = []
        for i, g in enumerate(g_step):
            g = g.astype(np.float64) + (0.0 if decouple else wd * w[i])
            gs.append(g)
            dlr_i = dlr * scales[i]
            sg = g.ravel()[::slice_p]
            numerator += (d / d0) * dlr_i * np.dot(sg, p0[i] - w[i].ravel()[::slice_p])
            m[i] = beta1 * m[i] + d * (1 - beta1) * g
            v[i] = beta2 * v[i] + d * d * (1 - beta2) * g * g
            s[i] = beta3 * s[i] + (d / d0) * (d if safeguard_warmup else dlr_i) * sg
            denom += np.abs(s[i]).sum()
        if denom == 0:
            continue
        d_hat = d_coef * numerator / denom
        if d == d0:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * growth_rate)
        num = numerator
        for i in range(len(w)):
            dlr_i = dlr * scales[i]
            if decouple:
                w[i] = w[i] - wd * dlr_i * w[i]
            w[i] = (w[i] - dlr_i * m[i] / (np.sqrt(v[i]) + d * eps)).astype(store).astype(np.float64)
        k += 1
    return w, d


def _assert_close(got, want, inits, rtol=1e-6):
    """Each parameter's displacement from its start agrees with the reference's to ``rtol`` of the largest
    displacement, plus the fp32 rounding of the weights themselves (half an ulp, 2^-24 |w|, per step)."""
    for i, (a, b, w0) in enumerate(zip(got, want, inits)):
        moved_ref = b - w0
        atol = rtol * np.abs(moved_ref).max() + STEPS * 2 ** -24 * np.abs(w0).max() * 1.1
        np.testing.assert_allclose(a - w0, moved_ref, rtol=rtol, atol=atol, err_msg=f"param {i}")


CASES = [
    ("lion", {}, lambda i, g, l, s: ref_lion(i, g, l, s)),
    ("lion", {"betas": "0.95,0.98", "weight_decay": 0.5},
     lambda i, g, l, s: ref_lion(i, g, l, s, 0.95, 0.98, 0.5)),
    ("lamb", {}, lambda i, g, l, s: ref_lamb(i, g, l, s)),
    ("adafactor", {}, lambda i, g, l, s: ref_adafactor(i, g, l, s)),
    ("adafactor", {"relative_step": False, "scale_parameter": False, "beta1": 0.9, "weight_decay": 0.0},
     lambda i, g, l, s: ref_adafactor(i, g, l, s, beta1=0.9, wd=0.0, scale_parameter=False, relative_step=False)),
    ("adafactor", {"warmup_init": True, "clip_threshold": 0.5, "decay_rate": -0.5},
     lambda i, g, l, s: ref_adafactor(i, g, l, s, clip=0.5, decay_rate=-0.5, warmup_init=True)),
    ("prodigy", {"d0": 0.05}, lambda i, g, l, s: ref_prodigy(i, g, l, s, d0=0.05)[0]),
    ("prodigy", {"d0": 0.05, "use_bias_correction": True, "safeguard_warmup": True, "decouple": False,
                 "d_coef": 2.0, "growth_rate": 1.5, "slice_p": 2, "beta3": 0.9},
     lambda i, g, l, s: ref_prodigy(i, g, l, s, d0=0.05, use_bias_correction=True, safeguard_warmup=True,
                                    decouple=False, d_coef=2.0, growth_rate=1.5, slice_p=2, beta3=0.9)[0]),
]


@pytest.mark.parametrize("name, options, reference", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_update_matches_the_float64_algorithm_with_group_rates(name, options, reference):
    inits, grads = _problem()
    # lr multipliers per parameter (unet_lr / text_encoder_lr); adafactor's relative step ignores them
    got, _, _ = _run(name, options, inits, grads, LRS, SCALES)
    want = reference(inits, grads, LRS, SCALES)
    _assert_close(got, want, inits)
    assert all((a != b).any() for a, b in zip(got, inits))       # every parameter moved


def test_prodigy_estimates_d_from_its_default_d0():
    """d0 = 1e-6 (the default) on a quadratic (gradient w - target, so progress is consistent): d grows by
    orders of magnitude within a few steps and follows the float64 estimate. Its numerator sums g . (p0 - w)
    while w has moved by ~d only, so the fp32 rounding of the stored weights alone shifts d by 3e-3; with
    the reference's weights rounded to float32 after each step the two agree to 1e-5."""
    inits, _ = _problem(1)
    targets = [np.full(s, 3.0, np.float32) for s in SHAPES]
    params = [Parameter(Tensor(w.copy()), name=f"q{i}") for i, w in enumerate(inits)]
    opt = build_optimizer("prodigy", params, weight_decay=0.0)
    step = ms.jit(opt.construct)
    grads, ds = [], []
    for _ in range(8):
        g = [p.asnumpy() - t for p, t in zip(params, targets)]
        grads.append(g)
        step(ms.mutable(tuple(Tensor(x) for x in g)), Tensor(np.float32(1.0)))
        ds.append(float(opt.d.asnumpy()))
    _, d = ref_prodigy(inits, grads, [1.0] * len(grads), [1.0] * 3, betas=(0.9, 0.999), wd=0.0, store=np.float32)
    assert ds[-1] > 100 * ds[0] and ds == sorted(ds)
    assert abs(ds[-1] - d) < 5e-5 * d, (ds[-1], d)


def test_group_rates_move_each_group_by_its_own_rate_in_every_optimiser():
    """unet_lr != text_encoder_lr: one step of each old optimiser moves each group by its own rate."""
    unet = Parameter(Tensor(np.full((3,), 1.0, np.float32)), name="model.diffusion_model.w")
    text = Parameter(Tensor(np.full((3,), 1.0, np.float32)), name="cond_stage_model.w")
    scales = group_lr_scales([unet, text], [text], start_lr=1e-3, unet_lr=2e-3, text_encoder_lr=5e-4)
    assert scales == [2.0, 0.5]
    g = np.array([0.5, -1.0, 2.0], np.float32)
    for name, step_of in [("adamw", lambda lr: lr * np.sign(g) + lr * 0.1 * 1.0),    # first Adam step: lr * sign(g)
                          ("adam", lambda lr: lr * np.sign(g + 0.1)),
                          ("momentum", lambda lr: lr * (g + 0.1)),
                          ("sgd", lambda lr: lr * (g + 0.1))]:
        unet.set_data(Tensor(np.ones(3, np.float32)))
        text.set_data(Tensor(np.ones(3, np.float32)))
        opt = build_optimizer(name, [unet, text], (0.9, 0.999), 1e-12, 0.1, lr_scales=scales)
        opt((Tensor(g), Tensor(g)), Tensor(np.float32(1e-3)))
        # 1 - w: the fp32 weight near 1 carries 6e-8 of rounding
        np.testing.assert_allclose(1.0 - unet.asnumpy(), step_of(2e-3), rtol=1e-5, atol=1.2e-7, err_msg=name)
        np.testing.assert_allclose(1.0 - text.asnumpy(), step_of(5e-4), rtol=1e-5, atol=1.2e-7, err_msg=name)


@pytest.mark.parametrize("name, options", [("lion", {}), ("lamb", {}), ("adafactor", {"beta1": 0.9}),
                                           ("prodigy", {"d0": 0.05, "slice_p": 3})])
def test_resume_continues_bit_for_bit(name, options, tmp_path):
    inits, grads = _problem(2)
    whole, _, _ = _run(name, options, inits, grads, LRS)
    _, params, opt = _run(name, options, inits, grads[:3], LRS[:3])
    ckpts = CheckpointManager(str(tmp_path))
    ckpts.save_resume(_state(params, opt), dict(global_step=3))
    resumed, _, _ = _run(name, options, inits, grads, LRS, opt_state=ckpts.resume_path, start=3)
    for a, b in zip(resumed, whole):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, options", [("adamw", {}), ("sgd", {}), ("lion", {}), ("lamb", {}), ("adafactor", {}),
                                           ("adafactor", {"beta1": 0.9}), ("prodigy", {"slice_p": 11})])
def test_state_size_function_matches_the_allocated_state(name, options):
    params = [Parameter(Tensor(np.zeros(s, np.float32)), name=f"p{i}") for i, s in enumerate(SHAPES + [(7, 3, 1, 1)])]
    opt = build_optimizer(name, params, options=options)
    settings = optimizer_settings(name, options=options)
    assert state_bytes(name, [p.shape for p in params], settings) == state_nbytes(opt, params)
    if name == "adafactor":         # factored over the last two dimensions, as transformers
        assert state_shapes(name, (3, 2, 3, 3), settings)[:2] == [(3, 2, 3), (3, 2, 3)]


def test_optimizer_args_parse_and_check():
    assert parse_optimizer_args("d_coef=2 use_bias_correction=True betas=(0.9, 0.99)") == dict(
        d_coef=2, use_bias_correction=True, betas=[0.9, 0.99])
    assert parse_optimizer_args(["beta1=None", "eps=1e-30,1e-3", "growth_rate=inf"]) == dict(
        beta1=None, eps=[1e-30, 1e-3], growth_rate="inf")
    assert parse_optimizer_args({"d_coef": 2}) == {"d_coef": 2}
    assert optimizer_settings("prodigy", options=dict(growth_rate="inf"))["growth_rate"] == math.inf
    assert optimizer_settings("lion", betas=(0.9, 0.999), options=dict(betas=[0.95, 0.98]))["betas"] == [0.95, 0.98]
    bad = [("prodigy", dict(d_coeff=2), "d_coeff not accepted by prodigy; its keys: betas, beta3, eps"),
           ("prodigy", dict(d_coef=0), "d_coef of prodigy must be > 0"),
           ("prodigy", dict(d_coef="nan"), "d_coef of prodigy must be > 0"),
           ("lion", dict(betas=[0.9, 1.0]), "betas of lion must be two numbers in [0, 1)"),
           ("adafactor", dict(eps=1e-30), "eps of adafactor must be two numbers > 0"),
           ("adafactor", dict(warmup_init=True, relative_step=False), "warmup_init=True needs relative_step=True"),
           ("adafactor", dict(scale_parameter="maybe"), "scale_parameter of adafactor must be True or False"),
           ("adamw", dict(weight_decay=-1), "weight_decay of adamw must be >= 0")]
    for name, options, message in bad:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            optimizer_settings(name, options=options)


def test_cosine_with_restarts_follows_transformers_formula():
    total, warmup, cycles = 40, 4, 3
    for end in (0.0, 1e-5):
        lrs = build_lr_schedule("cosine_with_restarts", 1e-3, end, total, warmup, num_cycles=cycles)
        for step in range(total):
            if step < warmup:
                want = 1e-3 * (step + 1) / warmup
            else:
                progress = (step - warmup) / (total - warmup)
                want = end + (1e-3 - end) * max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
            assert abs(lrs[step] - want) <= 1e-7 * 1e-3, (step, lrs[step], want)
        assert lrs[warmup] == np.float32(1e-3) and lrs[warmup + 12] == np.float32(1e-3)    # the restarts
    after = build_lr_schedule("cosine_with_restarts", 1.0, 0.1, 10, 0, decay_steps=5, num_cycles=2)
    assert (after[5:] == np.float32(0.1)).all()
