"""The ControlNet model and its weight files: residuals against diffusers' ControlNetModel (tiny random SD 1.x-
and SD 2.x-style nets, tests/fixtures/make_controlnet_fixtures.py) through every loader (diffusers folder,
lllyasviel .pth, MindONE .ckpt), conditioning scale and guess mode, name tables, the training start
(build_controlnet_from_unet), our save format, combined base + ControlNet checkpoints and the refusals."""
import copy
import json
import os

import mindspore as ms
import numpy as np
import pytest

import controlnet_helpers as H
from ldm.convert.checkpoint import load_model
from ldm.convert.controlnet import (check_base, load_controlnet, read_controlnet, save_controlnet,
                                    yaml_controlnet_params)
from ldm.convert.diffusers import diffusers_model_config
from ldm.convert.names_controlnet import controlnet_name_table
from ldm.convert.readers import read_weight_file
from ldm.errors import CheckpointError, UserError
from ldm.models.controlnet import ControlNetModel, build_controlnet_from_unet, control_scales
from ldm.util import load_config, part_params
from pipeline_models import PIPELINE_FIXTURES

STYLES = ("sd1", "sd2")
TOL = 1e-5                 # of the residuals' magnitude (up to ~10 here)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """{style: (model config dict, model)}: the fixture pipelines read straight from their diffusers folders."""
    out = {}
    for style in STYLES:
        folder = os.path.join(PIPELINE_FIXTURES, style)
        cfg = diffusers_model_config(folder)
        out[style] = (cfg, load_model(cfg, folder))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same ControlNet (seed 1) per style in the three layouts."""
    root = tmp_path_factory.mktemp("controlnet-files")
    out = {}
    for style in STYLES:
        out[(style, "diffusers")] = H.diffusers_folder(style, 1, str(root / f"{style}-diffusers"))
        out[(style, "lllyasviel")] = H.lllyasviel_file(style, 1, str(root / f"{style}.pth"))
        out[(style, "mindone")] = H.mindone_file(style, 1, str(root / f"{style}.ckpt"))
    return out


def _max_err(outs, refs):
    assert len(outs) == len(refs)
    return max(float(np.abs(np.asarray(o) - r).max() / max(1.0, np.abs(r).max())) for o, r in zip(outs, refs))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("layout", ("diffusers", "lllyasviel", "mindone"))
def test_residuals_match_diffusers(style, layout, base, files):
    """Three timesteps (999, 500, 10) in one batch; every residual within 1e-5 of diffusers' (fp32), plain and
    with conditioning_scale 0.7 in guess mode (diffusers' logspace ramp)."""
    cfg, _ = base[style]
    net = load_controlnet(files[(style, layout)], cfg)
    assert net.source_layout == layout and net.num_residuals == 5
    outs = [o.asnumpy() for o in net(*H.inputs(style))]
    assert _max_err(outs, H.references(style)) <= TOL
    ramp = control_scales(net.num_residuals, 0.7, guess_mode=True)
    assert _max_err([o * s for o, s in zip(outs, ramp)], H.references(style, "residual_guess07")) <= TOL


def test_channel_order_and_global_pool(base, files):
    """diffusers' controlnet_conditioning_channel_order 'bgr' flips the control image; global_pool_conditions
    (shuffle ControlNets) averages every residual over space."""
    cfg, _ = base["sd2"]
    net = load_controlnet(files[("sd2", "diffusers")], cfg)
    x, t, context, hint = H.inputs("sd2")
    flipped = [o.asnumpy() for o in net(x, t, context, ms.Tensor(hint.asnumpy()[:, ::-1].copy()))]
    net.channel_order, net.global_pool_conditions = "bgr", True
    pooled = [o.asnumpy() for o in net(x, t, context, hint)]
    assert all(p.shape[2:] == (1, 1) for p in pooled)
    assert _max_err(pooled, [f.mean(axis=(2, 3), keepdims=True) for f in flipped]) <= TOL


def test_scales_rule():
    assert np.allclose(control_scales(13, 0.5), 0.5)
    ramp = control_scales(13, 1.0, guess_mode=True)
    assert np.isclose(ramp[0], 0.1) and np.isclose(ramp[-1], 1.0)
    mindone = 0.825 ** (12 - np.arange(13))          # lllyasviel's / MindONE's guess-mode weights
    assert np.abs(mindone / ramp - 1).max() < 0.006


def test_names_tables_and_the_diffusers_file(base):
    """Our parameters are the table's first column; its diffusers column is exactly the diffusers model's names
    (recorded by the fixture script); the encoder is the UNet's (same names and shapes)."""
    cfg, model = base["sd2"]
    params = H.params("sd2")
    net = ControlNetModel(**params)
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    rows = controlnet_name_table(params)
    assert sorted(ours) == sorted(r[0] for r in rows)
    assert sorted(r[2] for r in rows) == sorted(H.diffusers_state("sd2", 1))
    unet = {p.name[len("model.diffusion_model."):]: tuple(p.shape) for p in model.get_parameters()
            if p.name.startswith("model.diffusion_model.")}
    shared = [n for n in ours if n.startswith(("time_embed.", "input_blocks.", "middle_block."))]
    assert shared and all(unet[n] == ours[n] for n in shared)
    sd15 = os.path.join(H.REPO, "configs", "v1-controlnet-inference.yaml")
    full = controlnet_name_table(yaml_controlnet_params(sd15))
    zero = [r for r in full if r[0].startswith("zero_convs.")]
    hint = [r for r in full if r[0].startswith("input_hint_block.")]
    assert len(zero) == 24 and zero[-1][1] == "zero_convs.11.0.bias" and zero[-1][2] == "controlnet_down_blocks.11.bias"
    assert hint[-1][:2] == ("input_hint_block.14.conv.bias", "input_hint_block.14.bias")
    assert hint[-1][2] == "controlnet_cond_embedding.conv_out.bias"


def test_training_start_and_save_format(base, tmp_path):
    """build_controlnet_from_unet copies the encoder, its residuals are 0 (the controlled UNet is the base
    model); save_controlnet writes MindONE names under control_model., which load_controlnet reads back."""
    cfg, model = base["sd1"]
    unet = model.diffusion_model
    net = build_controlnet_from_unet(unet, part_params(cfg, "unet_config"), 3, H.SETTINGS["hint_channels"])
    source = {p.name: p.asnumpy() for p in model.get_parameters()}
    for p in net.get_parameters():
        if p.name.startswith(("input_blocks.", "middle_block.", "time_embed.")):
            assert np.array_equal(p.asnumpy(), source["model.diffusion_model." + p.name])
    x, t, context, hint = H.inputs("sd1")
    residuals = net(x, t, context, hint)
    assert all(not np.abs(r.asnumpy()).any() for r in residuals)
    assert np.array_equal(unet(x, t, context, residuals).asnumpy(), unet(x, t, context).asnumpy())

    trained = load_controlnet(H.diffusers_folder("sd1", 2, str(tmp_path / "d")), cfg)
    path = save_controlnet(trained, str(tmp_path / "sd-10_controlnet.ckpt"))
    names = read_weight_file(path)
    assert all(k.startswith("control_model.") for k in names) and "control_model.zero_convs.0.conv.weight" in names
    again = load_controlnet(path, cfg)
    assert again.source_layout == "mindone"
    for a, b in zip(trained(x, t, context, hint), again(x, t, context, hint)):
        assert np.array_equal(a.asnumpy(), b.asnumpy())


def test_combined_checkpoint(base, tmp_path):
    """MindONE's cldm .ckpt holds base + ControlNet (model.diffusion_model.controlnet.*): the base loads from
    it (the ControlNet names are not 'unexpected'), and so does the ControlNet."""
    cfg, model = base["sd2"]
    tensors = [{"name": p.name, "data": p} for p in model.get_parameters()]
    control = read_weight_file(H.mindone_file("sd2", 1, str(tmp_path / "c.ckpt")))
    tensors += [{"name": k, "data": ms.Tensor(v)} for k, v in control.items()]
    path = str(tmp_path / "cldm.ckpt")
    ms.save_checkpoint(tensors, path)
    again = load_model(cfg, path)
    x, t, context, hint = H.inputs("sd2")
    before, after = model.diffusion_model(x, t, context), again.diffusion_model(x, t, context)
    assert np.array_equal(after.asnumpy(), before.asnumpy())
    net = load_controlnet(path, cfg)
    assert _max_err([o.asnumpy() for o in net(x, t, context, hint)], H.references("sd2")) <= TOL


def test_refusals(base, files, tmp_path):
    cfg, _ = base["sd1"]
    tiny = load_config(os.path.join(H.REPO, "configs", "tiny-v2.yaml"))          # context 32, UNet width 32
    with pytest.raises(UserError, match="made for a 16-wide text encoder .* the base model is a 32-wide"):
        load_controlnet(files[("sd1", "diffusers")], tiny)
    layout, names, _ = read_controlnet(files[("sd1", "lllyasviel")])
    sd1 = dict(names, **{"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": np.zeros((320, 768), np.float32)})
    with pytest.raises(UserError, match=r"made for SD 1.x \(text context width 768\); the base model is SD 2.x"):
        check_base(sd1, layout, {"context_dim": 1024, "model_channels": 320}, "control_sd15_canny.pth")
    with pytest.raises(CheckpointError, match="holds no ControlNet weights"):
        read_controlnet(os.path.join(PIPELINE_FIXTURES, "sd1", "unet", "diffusion_pytorch_model.safetensors"))
    with pytest.raises(UserError, match="ControlNet not found"):
        read_controlnet(str(tmp_path / "nowhere.pth"))
    sdxl = dict(H.diffusers_config("sd1"), addition_embed_type="text_time")
    folder = tmp_path / "sdxl"
    H.diffusers_folder("sd1", 1, str(folder))
    (folder / "config.json").write_text(json.dumps(sdxl))
    with pytest.raises(CheckpointError, match="SDXL"):
        load_controlnet(str(folder), cfg)


def test_mindone_cldm_yaml(tmp_path):
    """MindONE's ControlNet YAMLs (targets cldm.cldm.*; control_stage_config beside unet_config, or inside its
    params as its later ControlnetUnetModel has it) build our base model and give the ControlNet's params."""
    from ldm.models.latent_diffusion import build_model
    cfg = load_config(H.TINY_CONFIG)
    params = cfg["model"]["params"]
    control = params.pop("control_stage_config")
    cfg["model"]["target"] = "cldm.cldm.ControlLDM"
    params.update(control_key="hint", only_mid_control=False)
    later = copy.deepcopy(cfg)
    params["control_stage_config"] = dict(control, target="cldm.cldm.ControlNet")
    params["unet_config"]["target"] = "cldm.cldm.ControlledUnetModel"
    unet = later["model"]["params"]["unet_config"]
    unet["target"] = "cldm.cldm.ControlnetUnetModel"
    unet["params"].update(control_stage_config=control, guess_mode=False, strength=1.0, sd_locked=True)
    for c in (cfg, later):
        assert yaml_controlnet_params(c)["hint_block_channels"] == [16, 32, 32]
        model = build_model(c, lazy_init=True)
        assert model.diffusion_model.model_channels == 64
