"""LoRA adapters beyond attention LoRA: conv LoRA (kohya's LoCon conv_dim / conv_alpha), DoRA, per-layer
rank patterns, the kohya-ss export, and a training run with all three (ldm.models.lora, ldm.train.adapters,
ldm.convert.lora_formats). References are float64 numpy formulas written out here."""
import importlib.util
import os

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor, nn, ops

from ldm.errors import CheckpointError, UserError
from ldm.models.lora import (RankPattern, inject_lora, layer_name, load_lora, lora_layers, lora_parameters,
                             merge_lora, save_lora)
from ldm.models.unet import Downsample, ResBlock, Upsample
from tests.train_standin import CrossAttention, StandInLDM, Wrapper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny-v2-vpred.yaml")


# ------------------------------------------------------------------ a stand-in with LoCon targets
class TinyResUNet(nn.Cell):
    """The training stand-in's UNet with a ResBlock, a Downsample and an Upsample (3x3 convs that take
    conv LoRA), their base weights random (a zero-initialised conv has no direction for DoRA)."""

    def __init__(self, channels=4, width=32, context_dim=8):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, width, 3, pad_mode="pad", padding=1, has_bias=True)
        self.time_embed = nn.Dense(1, width)
        self.res = ResBlock(width, width, width)
        self.down = Downsample(width)
        self.up = Upsample(width)
        self.attn1 = CrossAttention(width, context_dim)
        self.conv_out = nn.Conv2d(width, channels, 3, pad_mode="pad", padding=1, has_bias=True)
        rng = np.random.default_rng(5)
        for conv in (self.res.out_layers_conv.conv,):
            conv.weight.set_data(Tensor(rng.normal(0, 0.05, conv.weight.shape).astype(np.float32)))

    def construct(self, x, t, context):
        h = self.conv_in(x)
        temb = self.time_embed(t.astype(ms.float32).reshape((-1, 1)) / 1000.0)
        h = self.up(self.down(self.res(h, temb)), temb)
        n, c, hh, ww = h.shape
        seq = h.reshape((n, c, hh * ww)).transpose(0, 2, 1)
        seq = seq + self.attn1(seq, context)
        return self.conv_out(ops.silu(seq.transpose(0, 2, 1).reshape((n, c, hh, ww))))


class ResStandInLDM(StandInLDM):
    def __init__(self, spec=None):
        super().__init__(spec)
        self.model = Wrapper(TinyResUNet())


# ------------------------------------------------------------------ float64 references
def conv_np(x, w, stride=1, pad=0):
    """[N x C x H x W] * [O x C x kh x kw] -> [N x O x H' x W'], float64, zero padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w)


def _f64(p):
    return p.asnumpy().astype(np.float64)


def _randomise(cell, seed):
    rng = np.random.default_rng(seed)
    for p in (cell.lora_down, cell.lora_up):
        p.set_data(Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    if cell.lora_dora:
        m = cell.lora_magnitude.asnumpy()
        cell.lora_magnitude.set_data(Tensor((m * rng.uniform(0.5, 1.5, m.shape)).astype(np.float32)))


class Blocks(nn.Cell):
    def __init__(self):
        super().__init__()
        self.res = ResBlock(32, 16, 32)
        self.down = Downsample(32)
        self.proj = nn.Dense(32, 24)
        rng = np.random.default_rng(1)
        for p in self.get_parameters():
            p.set_data(Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------------ tests
def test_conv_lora_matches_numpy_reference():
    """W * x + b + (alpha / r) up(down(x)) for a stride-1 ResBlock conv and a stride-2 Downsample conv;
    merge_lora folds the same adapter into the kernel."""
    ms.set_seed(0)
    net = Blocks()
    params = inject_lora(net, rank=2, targets=("proj",), conv_rank=3, conv_alpha=1.5)
    names = sorted(layer_name(c) for c in lora_layers(net))
    assert names == ["down.op.conv", "proj", "res.in_layers_conv.conv", "res.out_layers_conv.conv"]
    conv = net.down.op.conv
    assert conv.lora_down.shape == (3, 32, 3, 3) and conv.lora_up.shape == (32, 3, 1, 1)
    assert len(params) == 8 and conv.lora_scale == 0.5
    x = _x((2, 32, 8, 8))
    for cell, stride in ((net.res.in_layers_conv.conv, 1), (conv, 2)):
        _randomise(cell, seed=stride)
        w, b, down, up = _f64(cell.weight), _f64(cell.bias), _f64(cell.lora_down), _f64(cell.lora_up)
        want = conv_np(x, w, stride, 1) + b.reshape(1, -1, 1, 1) + 0.5 * conv_np(conv_np(x, down, stride, 1), up)
        got = cell(Tensor(x.astype(np.float32))).asnumpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    before = conv(Tensor(x.astype(np.float32))).asnumpy()
    merge_lora(net)
    np.testing.assert_allclose(conv(Tensor(x.astype(np.float32))).asnumpy(), before, rtol=0, atol=2e-5)


def test_dora_exact_at_init_and_matches_numpy_formula():
    """At injection the DoRA layer computes the base layer bit for bit; with trained adapters and
    magnitude it is m * (W + s B A) / ||W + s B A|| (norm per output row) for a Dense and a conv; the
    fp16 path (lora_fp16) stays within fp16 error; merge_lora gives the same layer."""
    ms.set_seed(0)
    net = Blocks()
    xd, xc = _x((3, 5, 32), 1).astype(np.float32), _x((2, 32, 8, 8), 2).astype(np.float32)
    base_d, base_c = net.proj(Tensor(xd)).asnumpy(), net.down.op.conv(Tensor(xc)).asnumpy()
    inject_lora(net, rank=4, alpha=2, targets=("proj",), conv_rank=2, dora=True)
    dense, conv = net.proj, net.down.op.conv
    assert dense.lora_magnitude.name == "proj.lora_magnitude_vector" and dense.lora_magnitude.shape == (24,)
    assert np.array_equal(dense(Tensor(xd)).asnumpy(), base_d)
    assert np.array_equal(conv(Tensor(xc)).asnumpy(), base_c)
    np.testing.assert_allclose(_f64(dense.lora_magnitude), np.linalg.norm(_f64(dense.weight), axis=1), rtol=1e-6)

    def dora_weight(cell):
        w = _f64(cell.weight)
        v = w + cell.lora_scale * (_f64(cell.lora_up).reshape(w.shape[0], -1)
                                   @ _f64(cell.lora_down).reshape(cell.lora_rank, -1)).reshape(w.shape)
        norm = np.sqrt((v ** 2).reshape(w.shape[0], -1).sum(1))
        return v * (_f64(cell.lora_magnitude) / norm).reshape((-1,) + (1,) * (w.ndim - 1))

    _randomise(dense, 3)
    _randomise(conv, 4)
    want_d = xd.astype(np.float64) @ dora_weight(dense).T + _f64(dense.bias)
    want_c = conv_np(xc.astype(np.float64), dora_weight(conv), 2, 1) + _f64(conv.bias).reshape(1, -1, 1, 1)
    got_d, got_c = dense(Tensor(xd)).asnumpy(), conv(Tensor(xc)).asnumpy()
    np.testing.assert_allclose(got_d, want_d, rtol=0, atol=2e-5)
    np.testing.assert_allclose(got_c, want_c, rtol=0, atol=2e-5)
    for cell in (dense, conv):
        cell.lora_dtype = ms.float16
    np.testing.assert_allclose(dense(Tensor(xd)).asnumpy(), want_d, rtol=0, atol=2e-2)
    np.testing.assert_allclose(conv(Tensor(xc)).asnumpy(), want_c, rtol=0, atol=2e-2)
    for cell in (dense, conv):
        cell.lora_dtype = None
    merge_lora(net)
    np.testing.assert_allclose(dense(Tensor(xd)).asnumpy(), want_d, rtol=0, atol=2e-5)
    np.testing.assert_allclose(conv(Tensor(xc)).asnumpy(), want_c, rtol=0, atol=2e-5)


def test_dora_file_loads_merged_with_scale_as_interpolation(tmp_path):
    """A saved DoRA + conv LoRA file loads into a fresh model merged into the weights: scale 1 gives the
    trained layer's weight m * V / ||V||, scale s gives W + s (W' - W) (scale 0 = the base model), and each
    load_lora replaces the previous one instead of adding to it."""
    ms.set_seed(0)
    model = ResStandInLDM()
    base = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
    params = inject_lora(model.diffusion_model, rank=2, conv_rank=3, conv_alpha=1.5, dora=True)
    rng = np.random.default_rng(2)
    for p in params:
        p.set_data(Tensor((p.asnumpy() + rng.normal(0, 0.2, p.shape)).astype(np.float32)))
    path = save_lora(model, str(tmp_path / "dora.ckpt"))
    assert sum(n.endswith(".lora_magnitude_vector") for n in ms.load_checkpoint(path)) == len(lora_layers(model))
    merged = _merged_weights(model)
    fresh = ResStandInLDM()
    for p in fresh.get_parameters():
        p.set_data(Tensor(base[p.name]))
    for scale in (1.0, 0.0, 0.5, 1.0):
        load_lora(fresh, path, scale=scale)
        got = {p.name: p.asnumpy() for p in fresh.get_parameters()}
        err = max(np.abs(got[k] - (base[k] + scale * (merged[k] - base[k]))).max() for k in base)
        assert err < 1e-6, (scale, err)
    assert max(np.abs(merged[k] - base[k]).max() for k in base) > 1e-2


def _tiny():
    from ldm.models.latent_diffusion import build_model
    ms.set_seed(0)
    return build_model(TINY)


def _write_pattern(tmp_path, mapping, name="pattern.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping) if isinstance(mapping, dict) else mapping, encoding="utf-8")
    return str(path)


def _merged_weights(model):
    merge_lora(model)
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def test_rank_pattern_shapes_mixed_ranks_round_trip_and_refusals(tmp_path):
    """Pattern keys (regular expressions on whole dotted name suffixes, first match wins) set rank and
    alpha per layer, conv layers included; the saved file holds the mixed ranks in its shapes and the
    differing alphas as <layer>.alpha, and load_lora into a fresh model merges to the same weights.
    A key matching no layer, a bad regex and bad values are one-line errors."""
    from ldm.train.adapters import read_rank_pattern
    path = _write_pattern(tmp_path, {r"attn2\.to_k": 8, "to_v": {"rank": 2, "alpha": 5},
                                     r"input_blocks\.1\.0\.in_layers_conv\.conv": {"rank": 5},
                                     r"middle_block\..*\.to_q": {"alpha": 1}})
    model = _tiny()
    unet = model.model.diffusion_model
    pattern = read_rank_pattern(path)
    params = inject_lora(unet, rank=4, alpha=0, conv_rank=3, conv_alpha=6, rank_pattern=pattern)
    assert pattern.unused() == []
    cells = {layer_name(c)[len("model.diffusion_model."):]: c for c in lora_layers(unet)}
    block = "input_blocks.1.1.transformer_blocks.0."
    assert cells[block + "attn2.to_k"].lora_down.shape == (8, 32) and cells[block + "attn2.to_k"].lora_alpha == 8
    assert cells[block + "attn1.to_v"].lora_down.shape == (2, 32) and cells[block + "attn1.to_v"].lora_alpha == 5
    assert cells[block + "attn1.to_q"].lora_down.shape == (4, 32) and cells[block + "attn1.to_q"].lora_alpha == 4
    mid = "middle_block.1.transformer_blocks.0.attn1.to_q"
    assert cells[mid].lora_rank == 4 and cells[mid].lora_scale == 0.25
    assert cells["input_blocks.1.0.in_layers_conv.conv"].lora_down.shape == (5, 32, 3, 3)
    assert cells["input_blocks.1.0.in_layers_conv.conv"].lora_alpha == 6
    assert cells["input_blocks.2.0.op.conv"].lora_down.shape == (3, 32, 3, 3)        # Downsample
    assert cells["output_blocks.1.1.conv.conv"].lora_up.shape == (64, 3, 1, 1)         # Upsample
    assert "input_blocks.0.0.conv" not in cells and "out.2.conv" not in cells          # conv_in / conv_out
    assert not any("skip_connection" in name for name in cells)                        # 1x1 shortcuts
    rng = np.random.default_rng(0)
    for p in params:
        p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    saved = save_lora(model, str(tmp_path / "mixed.ckpt"))
    arrays = ms.load_checkpoint(saved)
    alphas = {k for k in arrays if k.endswith(".alpha")}
    file_alpha = float(arrays["lora_meta.alpha"].asnumpy())       # the most common alpha (conv_alpha 6 here)
    differing = {layer_name(c) + ".alpha" for c in lora_layers(unet) if c.lora_alpha != file_alpha}
    assert file_alpha == 6 and alphas == differing | {"lora_meta.alpha"}
    assert f"model.diffusion_model.{block}attn1.to_v.alpha" in alphas
    fresh = _tiny()
    load_lora(fresh, saved)
    want, got = _merged_weights(model), _merged_weights(fresh)
    assert max(np.abs(want[k] - got[k]).max() for k in want) < 1e-6

    typo = RankPattern([("to_q", 2, None), ("to_qq", 8, None)], source="p.yaml")
    inject_lora(_tiny().model.diffusion_model, rank=4, rank_pattern=typo)
    with pytest.raises(CheckpointError, match=r"p.yaml: 1 key\(s\) match no LoRA layer: 'to_qq'"):
        typo.check_used()
    with pytest.raises(CheckpointError, match="not a regular expression"):
        RankPattern([("to_q(", 8, None)])
    bad = {"zero.yaml": ("to_q: 0\n", "rank must be an integer >= 1"),
           "alpha.yaml": ("to_q: {rank: 2, alpha: -1}\n", "alpha must be a finite number >= 0"),
           "extra.yaml": ("to_q: {rank: 2, dim: 4}\n", "takes rank and/or alpha, got dim"),
           "list.yaml": ("- to_q\n", "must hold a non-empty mapping"),
           "float.yaml": ("to_q: 2.5\n", "rank must be an integer"),
           "dup.yaml": ("to_q: 2\nto_q: 3\n", "duplicate key")}
    for name, (text, message) in bad.items():
        with pytest.raises(UserError, match=message):
            read_rank_pattern(_write_pattern(tmp_path, text, name))
    with pytest.raises(UserError, match="lora_rank_pattern not found"):
        read_rank_pattern(str(tmp_path / "nope.yaml"))


def _convert_cli():
    spec = importlib.util.spec_from_file_location("convert_weights_cli", os.path.join(REPO, "scripts",
                                                                                    "convert_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kohya_export_round_trip(tmp_path):
    """Our LoRA (UNet attention + LoCon convs at mixed ranks and alphas, text-encoder in_proj/out_proj)
    -> --to kohya_lora -> our kohya reader: the same adapters, and load_lora of the kohya file merges
    to the same weights as the original (1e-6). DoRA files are refused by both exports."""
    from ldm.convert.lora_formats import ModelLayout, mindone_entries, read_lora, to_mindone
    model = _tiny()
    params = inject_lora(model.model.diffusion_model, rank=4, alpha=2, conv_rank=2, conv_alpha=1,
                         rank_pattern=RankPattern([("to_k", 3, None)]))
    params += inject_lora(model.cond_stage_model, rank=2, text_encoder=True)
    rng = np.random.default_rng(1)
    for p in params:
        p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    ours = save_lora(model, str(tmp_path / "sd-1_lora.ckpt"))
    kohya = str(tmp_path / "kohya.safetensors")
    cli = _convert_cli()
    assert cli.main(["--source", ours, "--config", TINY, "--target", kohya, "--to", "kohya_lora"]) == 0
    lora = read_lora(kohya)
    assert lora.layout == "kohya"
    arrays = lora.arrays
    conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert arrays[conv1 + ".lora_down.weight"].shape == (2, 32, 3, 3)
    assert arrays[conv1 + ".lora_up.weight"].shape == (32, 2, 1, 1) and float(arrays[conv1 + ".alpha"]) == 1.0
    assert arrays["lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight"].shape == (2, 32, 3, 3)
    assert arrays["lora_unet_up_blocks_0_upsamplers_0_conv.lora_up.weight"].shape == (64, 2, 1, 1)
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"
    assert arrays[k + ".lora_down.weight"].shape == (3, 32) and arrays[k + ".alpha"].shape == ()
    q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert arrays[q + ".lora_up.weight"].shape == (32, 2) and float(arrays[q + ".alpha"]) == 2.0
    assert lora.metadata["ss_network_module"] == "networks.lora"
    layout = ModelLayout.from_config(TINY)
    back = to_mindone(lora, layout).entries
    want = mindone_entries(read_lora(ours).arrays)
    assert set(back) == set(want)
    for prefix, (down, up, alpha) in want.items():
        d2, u2, a2 = back[prefix]
        effective = alpha / down.shape[0] * up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        again = a2 / d2.shape[0] * u2.reshape(u2.shape[0], -1) @ d2.reshape(d2.shape[0], -1)
        np.testing.assert_allclose(again, effective, rtol=0, atol=1e-6)
    fresh = _tiny()
    load_lora(fresh, kohya)
    want_w, got_w = _merged_weights(model), _merged_weights(fresh)
    assert max(np.abs(want_w[k] - got_w[k]).max() for k in want_w) < 1e-6

    dora = _tiny()
    inject_lora(dora.model.diffusion_model, rank=2, dora=True)
    dora_path = save_lora(dora, str(tmp_path / "dora.ckpt"))
    for target in ("kohya_lora", "diffusers_lora"):
        with pytest.raises(UserError, match=f"holds DoRA adapters .* --to {target} does not write"):
            cli.main(["--source", dora_path, "--config", TINY, "--target", str(tmp_path / "d.safetensors"),
                      "--to", target])
    assert not os.path.exists(tmp_path / "d.safetensors")


STANDIN_YAML = """model:
  target: tests.test_lora_adapters.ResStandInLDM
  prediction_type: v
  params:
    scale_factor: 0.5
    linear_start: 0.00085
    linear_end: 0.012
    timesteps: 1000
"""


def test_training_with_conv_dora_and_rank_pattern(tmp_path):
    """A short compiled run with conv_dim + use_dora + a rank pattern (lora_fp16 on, MindONE's default:
    the linear DoRA layers compute in fp16, the conv ones in fp32): finite loss, only adapter tensors
    move, args.yaml records the options, and the saved file, loaded by load_lora (DoRA and conv merged)
    into a fresh model with the same base weights, gives the trained model's UNet output (both fp32)."""
    from ldm.train.config import parse_config
    from ldm.train.loop import TrainRun
    from tests.train_standin import make_shapes
    data = make_shapes(tmp_path / "shapes", num_train=4, size=32)
    config = tmp_path / "res_standin.yaml"
    config.write_text(STANDIN_YAML, encoding="utf-8")
    pattern = _write_pattern(tmp_path, {"to_k": 3, r"in_layers_conv\.conv": {"rank": 4, "alpha": 2}})
    cfg = parse_config(["--model_config", str(config), "--data_path", data, "--output_path", str(tmp_path / "out"),
                        "--image_size", "32", "--train_batch_size", "2", "--max_steps", "2", "--use_lora", "True",
                        "--lora_rank", "2", "--conv_dim", "2", "--conv_alpha", "1", "--use_dora", "True",
                        "--lora_rank_pattern", pattern, "--start_learning_rate", "1e-2",
                        "--show_progress", "False"])
    run = TrainRun(cfg)
    layers = lora_layers(run.model)
    assert {(len(c.weight.shape), c.lora_dtype) for c in layers} == {(2, ms.float16), (4, None)}
    before = {p.name: p.asnumpy().copy() for p in run.model.get_parameters()}
    summary = run.run()
    for cell in layers:
        cell.lora_dtype = None
    assert summary["global_step"] == 2 and np.isfinite(summary["last_loss"])
    adapter = {p.name for p in lora_parameters(run.model)}
    assert any(n.endswith("in_layers_conv.conv.lora_magnitude_vector") for n in adapter)
    moved = {p.name for p in run.model.get_parameters() if not np.array_equal(p.asnumpy(), before[p.name])}
    assert moved and moved <= adapter, sorted(moved - adapter)[:3]
    assert any("lora_magnitude_vector" in n for n in moved) and any("conv.lora_up" in n for n in moved)
    args = yaml.safe_load((tmp_path / "out" / "args.yaml").read_text(encoding="utf-8"))
    assert (args["conv_dim"], args["conv_alpha"], args["use_dora"], args["lora_rank_pattern"]) == (2, 1.0, True,
                                                                                                  pattern)
    saved, = [str(f) for f in (tmp_path / "out" / "ckpt").glob("sd-*_lora.ckpt")]
    arrays = ms.load_checkpoint(saved)
    conv = "model.diffusion_model.res.in_layers_conv.conv."
    assert arrays[conv + "lora_down.weight"].shape == (4, 32, 3, 3) and float(arrays["lora_meta.alpha"].asnumpy()) == 2
    assert float(arrays["model.diffusion_model.res.out_layers_conv.conv.alpha"].asnumpy()) == 1    # conv_alpha
    assert arrays["model.diffusion_model.attn1.to_k.lora_down.weight"].shape == (3, 8)

    fresh = ResStandInLDM()
    base = {n: v for n, v in before.items() if "lora_" not in n}
    for p in fresh.get_parameters():
        p.set_data(Tensor(base[p.name]))
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 4, 4, 4)).astype(np.float32))
    t = Tensor(np.array([5, 600], np.int32))
    c = Tensor(rng.standard_normal((2, 77, 8)).astype(np.float32))
    untrained = fresh.apply_model(x, t, c).asnumpy()
    assert load_lora(fresh, saved) == len(lora_layers(run.model))
    trained = run.model.apply_model(x, t, c).asnumpy()
    assert np.abs(trained - untrained).max() > 1e-3          # the adapters changed the UNet
    np.testing.assert_allclose(fresh.apply_model(x, t, c).asnumpy(), trained, rtol=0, atol=2e-5)


def test_dreambooth_takes_the_options_and_textual_inversion_refuses_them(tmp_path):
    from ldm.train import dreambooth, textual_inversion
    from tests.train_standin import write_standin_config
    inst = tmp_path / "inst"
    inst.mkdir()
    common = ["--model_config", write_standin_config(tmp_path), "--instance_data_dir", str(inst),
              "--instance_prompt", "a sks dog", "--with_prior_preservation", "False",
              "--output_path", str(tmp_path / "out")]
    cfg = dreambooth.parse_config(common + ["--use_lora", "True", "--lora_ft_unet", "True", "--conv_dim", "4",
                                            "--use_dora", "True"])
    assert (cfg.conv_dim, cfg.use_dora, cfg.lora_rank_pattern) == (4, True, "")
    with pytest.raises(UserError, match="conv_dim needs lora_ft_unet True"):
        dreambooth.parse_config(common + ["--use_lora", "True", "--lora_ft_unet", "False",
                                          "--lora_ft_text_encoder", "True", "--conv_dim", "4"])
    with pytest.raises(UserError, match="unrecognized arguments: --use_dora"):
        textual_inversion.parse_config(["--use_dora", "True"])
