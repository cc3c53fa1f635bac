"""LoRA files of other tools (kohya-ss, diffusers/peft) load through load_lora with diffusers' outputs,
and our LoRA exports as a diffusers LoRA that reads back unchanged.

References: tests/fixtures/make_lora_fixtures.py (random peft adapters on the tiny SD 1.x/2.x fixture
pipelines, saved by diffusers; the kohya file built from the same weights and checked by diffusers'
own loader; outputs at LoRA scale 1.0 and 0.6). SD 1.x carries conv LoRA (merged into the conv
weights here), SD 2.x linear LoRA only (its export was loaded by diffusers in the generator).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mindspore import Tensor

from ldm.convert.checkpoint import load_model
from ldm.convert.lora_formats import (ModelLayout, export_diffusers_lora, export_lora_file, lora_layout, read_lora,
                                      to_mindone)
from ldm.errors import CheckpointError
from ldm.models.lora import inject_lora, load_lora, lora_file_summary, save_lora
from ldm.util import load_config
from pipeline_models import converted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "lora")
REFS = np.load(os.path.join(FIXTURES, "references.npz"))
TOL = 1e-4


def _model(style):
    return load_model(converted(style)[0], converted(style)[1])


def _unet(model, style):
    return model.apply_model(Tensor(REFS[f"{style}_x"]), Tensor(REFS[f"{style}_t"]),
                             Tensor(REFS[f"{style}_context"])).asnumpy()


def _outputs(model, style):
    return _unet(model, style), model.cond_stage_model(Tensor(REFS[f"{style}_ids"])).asnumpy()


def _err(got, style, tag):
    return max(np.abs(got[0] - REFS[f"{style}_unet_{tag}"]).max(), np.abs(got[1] - REFS[f"{style}_text_{tag}"]).max())


@pytest.mark.slow
@pytest.mark.parametrize("style", ["sd1", "sd2"])
def test_kohya_and_peft_files_match_diffusers(style):
    """Both files at scale 1.0 and 0.6, loaded one after another into one model: each load replaces
    the last (conv LoRA merged into weights is taken out again), so scale 0 gives the base UNet back.
    (14-28 s: a tiny UNet call takes 2.5-4 s in PyNative on 2 shared cores.)"""
    model = _model(style)
    errors = {}
    for fmt in ("peft", "kohya"):
        path = os.path.join(FIXTURES, f"{style}_{fmt}.safetensors")
        assert lora_layout(read_lora(path).arrays) == ("kohya" if fmt == "kohya" else "diffusers")
        for scale in (1.0, 0.6):
            count = load_lora(model, path, scale)
            errors[f"{fmt}@{scale}"] = _err(_outputs(model, style), style, f"lora{scale}")
    load_lora(model, path, 0.0)
    errors["scale0_unet"] = np.abs(_unet(model, style) - REFS[f"{style}_unet_base"]).max()
    print(style, count, "layers;", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) < TOL, errors
    # the LoRA matters: scale 1 is far from the base
    assert np.abs(REFS[f"{style}_unet_lora1.0"] - REFS[f"{style}_unet_base"]).max() > 0.1


def test_kohya_summary_and_prefixes():
    path = os.path.join(FIXTURES, "sd1_kohya.safetensors")
    summary = lora_file_summary(path)
    assert summary["unet"] > 0 and summary["text_encoder"] == 8 and summary["rank"] is None  # ranks 2/3/4
    model = _model("sd1")
    n_unet = load_lora(model, path, 1.0, prefixes=("model.diffusion_model.",))
    text = model.cond_stage_model(Tensor(REFS["sd1_ids"])).asnumpy()
    assert n_unet == summary["unet"] and np.abs(text - REFS["sd1_text_base"]).max() < TOL


def test_export_round_trip(tmp_path):
    """Our LoRA (UNet + text encoder, fused in_proj) -> diffusers file -> our loader: identical arrays
    and outputs; the export of the peft fixture's conversion reproduces diffusers' outputs."""
    config, _ = converted("sd2")
    model = _model("sd2")
    rng = np.random.default_rng(3)
    params = inject_lora(model.model.diffusion_model, rank=2) + inject_lora(model.cond_stage_model, rank=2,
                                                                           text_encoder=True)
    for p in params:
        p.set_data(Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    want = _outputs(model, "sd2")
    ours = save_lora(model, str(tmp_path / "ours.ckpt"))
    exported = export_lora_file(ours, config, str(tmp_path / "ours_diffusers.safetensors"))
    names = list(read_lora(exported).arrays)
    cli = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"), "--source", ours,
                          "--config", config, "--target", str(tmp_path / "cli.safetensors"), "--to", "diffusers_lora"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    from_cli = read_lora(str(tmp_path / "cli.safetensors")).arrays
    assert set(from_cli) == set(names) and all(np.array_equal(from_cli[n], read_lora(exported).arrays[n]) for n in names)
    assert all(n.startswith(("unet.", "text_encoder.text_model.")) and ".lora_" in n for n in names)
    assert any(".self_attn.k_proj.lora_B." in n for n in names) and not any("in_proj" in n for n in names)
    back = to_mindone(read_lora(exported), load_config(config)).entries
    original = {p.name: p.asnumpy() for p in params}
    assert len(back) == len(params) // 2
    for prefix, (down, up, alpha) in back.items():
        assert np.array_equal(down, original[prefix + "lora_down.weight"])
        assert np.array_equal(up, original[prefix + "lora_up.weight"]) and alpha == down.shape[0]
    fresh = _model("sd2")
    load_lora(fresh, exported)
    got = _outputs(fresh, "sd2")
    err = max(np.abs(a - b).max() for a, b in zip(got, want))
    # the peft fixture, read into our names and exported: the file diffusers loaded in the generator
    entries = to_mindone(read_lora(os.path.join(FIXTURES, "sd2_peft.safetensors")), load_config(config)).entries
    again = export_diffusers_lora(entries, load_config(config), str(tmp_path / "peft_again.safetensors"))
    load_lora(fresh, again)
    err_peft = _err(_outputs(fresh, "sd2"), "sd2", "lora1.0")
    # a foreign LoRA (per-module ranks and alphas) saved in our format reloads exactly
    resaved = save_lora(fresh, str(tmp_path / "resaved.ckpt"))
    third = _model("sd2")
    load_lora(third, resaved)
    err_resaved = _err(_outputs(third, "sd2"), "sd2", "lora1.0")
    checks = json.loads(str(REFS["checks_json"]))
    print(f"round trip {err:.2e}; peft->ours->diffusers {err_peft:.2e}; in diffusers (generator) "
          f"{checks['sd2_exported_in_diffusers_vs_peft']:.2e}; resaved in our format {err_resaved:.2e}")
    assert err < 1e-5 and err_peft < TOL and err_resaved < TOL


def _write(tmp_path, name, arrays):
    from ldm.convert.readers import write_safetensors
    path = str(tmp_path / name)
    write_safetensors({k: np.asarray(v, np.float32) for k, v in arrays.items()}, path)
    return path


def test_bad_layouts_are_one_clear_error(tmp_path):
    layout = ModelLayout.from_config(load_config(converted("sd2")[0]))
    cases = {
        "unknown.safetensors": ({"foo.bar.weight": np.zeros(2), "foo.baz": np.zeros(2)},
                                r"no LoRA weights of a known layout \(names: foo\.bar\.weight, foo\.baz\)"),
        "loha.safetensors": ({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": np.zeros((2, 2))},
                             r"1 name\(s\) of an unsupported LoRA kind .*lora_unet_mid_block_attentions_0_proj_in"),
        "sdxl.safetensors": ({"lora_unet_foo_bar.lora_down.weight": np.zeros((2, 4)),
                              "lora_unet_foo_bar.lora_up.weight": np.zeros((4, 2))},
                             r"1 LoRA module\(s\) match no layer of this model, e\.g\. lora_unet_foo_bar"),
        "half.safetensors": ({"unet.mid_block.attentions.0.proj_in.lora_A.weight": np.zeros((2, 64))},
                             r"lack a down or up weight, e\.g\. unet\.mid_block\.attentions\.0\.proj_in"),
    }
    for name, (arrays, message) in cases.items():
        path = _write(tmp_path, name, arrays)
        with pytest.raises(CheckpointError, match=message) as info:
            to_mindone(read_lora(path), layout)
        assert "\n" not in str(info.value)
    model = _model("sd2")
    with pytest.raises(CheckpointError, match="no LoRA weights of a known layout"):
        load_lora(model, str(tmp_path / "unknown.safetensors"))
    conv = {"unet.down_blocks.0.resnets.0.conv1.lora_A.weight": np.zeros((2, 32, 3, 3)),
            "unet.down_blocks.0.resnets.0.conv1.lora_B.weight": np.zeros((32, 2, 1, 1))}
    entries = to_mindone(read_lora(_write(tmp_path, "conv.safetensors", conv)), layout).entries
    with pytest.raises(CheckpointError, match="cannot export the conv LoRA"):
        export_diffusers_lora(entries, layout, str(tmp_path / "x.safetensors"))


def _effective(entries):
    """{prefix: (down, alpha/rank * up)}: what a layer computes, whatever the file's alpha bookkeeping."""
    return {k: (d, u.astype(np.float64) * (a / d.shape[0])) for k, (d, u, a) in entries.items()}


def test_older_diffusers_names_and_peft_adapter_config(tmp_path):
    """The peft fixture renamed to diffusers' older names with explicit ``.alpha`` entries, and its UNet
    part as peft's save_pretrained (``base_model.model.`` + adapter_config.json), convert like the
    original (whose scales come from the lora_adapter_metadata); without any alpha the scale is 1."""
    from ldm.convert.lora_formats import _peft_configs, _pattern_value
    layout = ModelLayout.from_config(load_config(converted("sd2")[0]))
    peft = read_lora(os.path.join(FIXTURES, "sd2_peft.safetensors"))
    want = _effective(to_mindone(peft, layout).entries)
    configs = _peft_configs(peft)
    old, plain, unet_only = {}, {}, {}
    for name, value in peft.arrays.items():
        module, role = name.rsplit(".lora_", 1)
        role = "down" if role.startswith("A") else "up"
        component, path = module.split(".", 1)
        config = configs[component]
        alpha = _pattern_value(config["alpha_pattern"], path) or config["lora_alpha"]
        proj = path.rsplit(".", 1)[-1] if ".attn" in path and "to_out" not in path else None
        if proj in ("to_q", "to_k", "to_v"):
            old_name = f"{module.rsplit('.', 1)[0]}.processor.{proj}_lora.{role}.weight"
        elif path.endswith("to_out.0"):
            old_name = f"{module[:-len('.to_out.0')]}.processor.to_out_lora.{role}.weight"
        elif component == "text_encoder":
            old_name = f"{module}.lora_linear_layer.{role}.weight"
        else:
            old_name = f"{module}.lora.{role}.weight"
        old[old_name] = value
        old[module + ".alpha"] = np.float32(alpha)
        plain[name] = value
        if component == "unet":
            unet_only["base_model.model." + name[len("unet."):]] = value
    got = _effective(to_mindone(read_lora(_write(tmp_path, "old.safetensors", old)), layout).entries)
    folder = tmp_path / "peft_unet"
    folder.mkdir()
    with open(folder / "adapter_config.json", "w") as f:
        json.dump({"r": 4, "lora_alpha": configs["unet"]["lora_alpha"], "rank_pattern": {"to_k": 2}}, f)
    unet = _effective(to_mindone(read_lora(_write(folder, "adapter_model.safetensors", unet_only)), layout).entries)
    bare = to_mindone(read_lora(_write(tmp_path, "bare.safetensors", plain)), layout).entries
    assert set(got) == set(want) and set(unet) == {k for k in want if k.startswith("model.diffusion_model.")}
    for prefix, (down, up) in want.items():
        for other in (got, unet) if prefix in unet else (got,):
            assert np.array_equal(other[prefix][0], down) and np.allclose(other[prefix][1], up, rtol=1e-6)
    assert all(alpha == down.shape[0] for down, _, alpha in bare.values())      # no metadata: scale 1
