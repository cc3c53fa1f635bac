"""Checkpoint reading, layout conversion, strict loading, export and the convert_weights CLI.

Fixtures: tests/fixtures/text (tiny CLIP towers, torch zip + legacy + safetensors, made by
make_text_fixtures.py) and tests/fixtures/pipeline (tiny diffusers SD1/SD2 folders).
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import mindspore as ms
import numpy as np
import pytest

from ldm.convert import checkpoint, names_text
from ldm.convert.convert_weights import convert_weights, save_mindspore_checkpoint
from ldm.convert.diffusers import diffusers_model_config
from ldm.convert.names_unet import unet_name_table
from ldm.convert.names_vae import vae_name_table
from ldm.convert.readers import read_weight_file, write_safetensors
from ldm.errors import CheckpointError
from ldm.models.latent_diffusion import build_model
from ldm.util import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
TEXT = os.path.join(FIX, "text")
PIPE = os.path.join(FIX, "pipeline")
CLI = os.path.join(REPO, "scripts", "convert_weights.py")


def _tiny_config(quick_gelu, width=8):
    """configs/tiny-v1.yaml with the text tower of the text fixtures (width 8, 2 layers)."""
    cfg = load_config(os.path.join(REPO, "configs", "tiny-v1.yaml"))
    params = cfg["model"]["params"]
    params["unet_config"]["params"]["context_dim"] = width
    params["cond_stage_config"]["params"].update(width=width, heads=2, layers=2, output_dim=width,
                                                 use_quick_gelu=quick_gelu, pad_token="eot" if quick_gelu else 0)
    return cfg


def _stability_state(model, cfg, text_state):
    """A Stability-layout dict: the model's own UNet/VAE under CompVis names plus a real text tower."""
    ours = {p.name: p.asnumpy() for p in model.get_parameters()}
    params = cfg["model"]["params"]
    state = {}
    for row in unet_name_table(params["unet_config"]["params"]):
        state["model.diffusion_model." + row[1]] = ours["model.diffusion_model." + row[0]]
    for row in vae_name_table(params["first_stage_config"]["params"]["ddconfig"]):
        state["first_stage_model." + row[1]] = ours["first_stage_model." + row[0]]
    state.update(text_state)
    state["betas"] = np.zeros(1000)            # LDM schedule buffers are ignored
    state["model_ema.decay"] = np.array(0.999)  # so are EMA copies
    return state, ours


def _conditioning(model, ids):
    return model.get_learned_conditioning(ms.Tensor(ids, ms.int32)).asnumpy()


# ------------------------------------------------------------------ readers
def test_reads_torch_zip_legacy_and_safetensors():
    zip_state = read_weight_file(os.path.join(TEXT, "sd1_text_stability.ckpt"))
    legacy = read_weight_file(os.path.join(TEXT, "sd2_text_openclip_legacy.ckpt"))
    safe = read_weight_file(os.path.join(TEXT, "sd1_text_encoder", "model.safetensors"))
    assert zip_state["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == np.int64
    assert legacy["cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight"].shape == (24, 8)
    # the zip checkpoint and the safetensors file hold the same SD1 weights
    for name, value in safe.items():
        np.testing.assert_array_equal(zip_state["cond_stage_model.transformer." + name], value)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_file_tensor_kinds(fmt):
    """fp16/bf16/f64/int64/bool/0-d tensors, non-contiguous views, storage offsets, shared storages."""
    from ldm.convert.torch_pickle import load_torch_file
    obj = load_torch_file(os.path.join(TEXT, f"torch_formats_{fmt}.pt"))
    assert obj["epoch"] == 3 and obj["hparams"] == {"lr": 1e-4, "names": ["a", "b"]}
    with np.load(os.path.join(TEXT, "torch_formats_expected.npz")) as expected:
        for name in expected.files:
            got = obj["state_dict"][name]
            assert got.dtype == expected[name].dtype and got.shape == expected[name].shape, name
            np.testing.assert_array_equal(got, expected[name])


def test_mindspore_checkpoint_round_trip(tmp_path):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.gamma": np.ones(4, np.float32)}
    path = str(tmp_path / "x.ckpt")
    save_mindspore_checkpoint(state, path)
    back = checkpoint.read_state_dict(path)
    assert set(back) == set(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])


def test_safetensors_bf16_and_fp16(tmp_path):
    path = str(tmp_path / "x.safetensors")
    write_safetensors({"h": np.array([1.5, -2.0], np.float16)}, path)
    assert read_weight_file(path)["h"].dtype == np.float16
    # bf16 (numpy has no such dtype): the top 16 bits of float32, widened back on read
    values = np.array([1.5, -2.25, 3072.0], np.float32)  # exact in bf16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"b": {"dtype": "BF16", "shape": [3], "data_offsets": [0, len(raw)]}}).encode()
    bf16 = tmp_path / "b.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(read_weight_file(str(bf16))["b"], values)


# ------------------------------------------------------------------ Stability layout, full model
def test_stability_sd1_checkpoint_loads_and_matches_transformers(tmp_path):
    cfg = _tiny_config(quick_gelu=True)
    source = build_model(cfg)
    text = read_weight_file(os.path.join(TEXT, "sd1_text_stability.ckpt"))
    state, ours = _stability_state(source, cfg, text)
    path = str(tmp_path / "sd1_stability.safetensors")
    write_safetensors(state, path)
    assert checkpoint.detect_layout(state) == "stability"
    model = checkpoint.load_model(cfg, path)
    loaded = {p.name: p.asnumpy() for p in model.get_parameters()}
    for name in ours:
        if name.startswith(("model.", "first_stage_model.")):
            np.testing.assert_array_equal(loaded[name], ours[name])
    ref = np.load(os.path.join(TEXT, "sd1_text_ref.npz"))
    assert np.abs(_conditioning(model, ref["ids"]) - ref["last_hidden_state"]).max() <= 1e-4


def test_stability_sd2_openclip_keeps_penultimate_layer(tmp_path):
    cfg = _tiny_config(quick_gelu=False)
    source = build_model(cfg)
    text = read_weight_file(os.path.join(TEXT, "sd2_text_openclip_legacy.ckpt"))  # 3 layers + extras
    state, _ = _stability_state(source, cfg, text)
    path = str(tmp_path / "sd2_stability.safetensors")
    write_safetensors(state, path)
    model = checkpoint.load_model(cfg, path)
    ref = np.load(os.path.join(TEXT, "sd2_openclip_ref.npz"))
    assert np.abs(_conditioning(model, ref["ids"]) - ref["penultimate"]).max() <= 1e-4


# ------------------------------------------------------------------ diffusers folders
@pytest.mark.parametrize("style", ["sd1", "sd2"])
def test_diffusers_folder_config_is_derived(style):
    cfg = diffusers_model_config(os.path.join(PIPE, style))["model"]
    unet = cfg["params"]["unet_config"]["params"]
    text = cfg["params"]["cond_stage_config"]["params"]
    assert unet["model_channels"] == 32 and unet["channel_mult"] == [1, 2] and unet["context_dim"] == 16
    assert unet["attention_resolutions"] == [1] and unet["num_res_blocks"] == 1
    if style == "sd1":  # attention_head_dim=2 means 2 heads (diffusers' naming)
        assert (unet["num_heads"], unet["num_head_channels"], unet["use_linear_in_transformer"]) == (2, -1, False)
        assert text["use_quick_gelu"] and text["pad_token"] == "eot"
    else:
        assert unet["num_head_channels"] == 16 and unet["use_linear_in_transformer"]
        assert not text["use_quick_gelu"] and text["pad_token"] == 0
    assert text["width"] == 16 and text["layers"] == 2 and cfg["params"]["scale_factor"] == 0.18215


def test_diffusers_folder_convert_load_and_export_round_trip(tmp_path):
    folder = os.path.join(PIPE, "sd2")
    ckpt, yaml_out, exported = (str(tmp_path / n) for n in ("m.ckpt", "m.yaml", "m.safetensors"))
    convert_weights(folder, ckpt, config_out=yaml_out)
    cfg = load_config(yaml_out)
    direct = checkpoint.load_model(cfg, folder)
    via_ckpt = checkpoint.load_model(cfg, ckpt)
    a = {p.name: p.asnumpy() for p in direct.get_parameters()}
    b = {p.name: p.asnumpy() for p in via_ckpt.get_parameters()}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    ids = via_ckpt.tokenize(["a red cube", ""])
    np.testing.assert_array_equal(_conditioning(direct, ids), _conditioning(via_ckpt, ids))

    convert_weights(ckpt, exported, config=yaml_out, to="diffusers")
    back = read_weight_file(exported)
    original = checkpoint.read_state_dict(folder)
    norm = lambda d: {k.replace("text_encoder.text_model.", "text_encoder."): v for k, v in d.items()}
    back, original = norm(back), norm(original)
    assert back.keys() == original.keys()
    for k, v in original.items():
        np.testing.assert_array_equal(back[k], v.astype(np.float32))

    # a full diffusers folder: its own config files must describe the same model, weights unchanged
    out_folder = str(tmp_path / "exported_sd2")
    convert_weights(ckpt, out_folder, config=yaml_out, to="diffusers")
    assert diffusers_model_config(out_folder) == cfg
    again = norm(checkpoint.read_state_dict(out_folder))
    assert again.keys() == original.keys()
    for k, v in original.items():
        np.testing.assert_array_equal(again[k], v.astype(np.float32))
    with pytest.raises(CheckpointError, match="already exists"):
        convert_weights(ckpt, out_folder, config=yaml_out, to="diffusers")


# ------------------------------------------------------------------ errors
def test_fp16_storage_halves_the_file_and_loads_as_fp32(tmp_path):
    folder = os.path.join(PIPE, "sd2")
    full, half, yaml_out = (str(tmp_path / n) for n in ("m32.ckpt", "m16.ckpt", "m.yaml"))
    convert_weights(folder, full, config_out=yaml_out)
    convert_weights(full, half, config=yaml_out, dtype="fp16")
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    cfg = load_config(yaml_out)
    a = {p.name: p for p in checkpoint.load_model(cfg, full).get_parameters()}
    b = {p.name: p for p in checkpoint.load_model(cfg, half).get_parameters()}
    for name, p in b.items():
        assert p.dtype == a[name].dtype
        ref = a[name].asnumpy()
        np.testing.assert_array_equal(p.asnumpy(), ref.astype(np.float16).astype(ref.dtype))
    with pytest.raises(Exception, match="dtype"):
        convert_weights(full, str(tmp_path / "x.safetensors"), config=yaml_out, to="diffusers", dtype="fp16")


def test_wrong_config_lists_mismatches():
    cfg = load_config(os.path.join(REPO, "configs", "tiny-v2.yaml"))  # width 32, the folder has 16
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_model(cfg, os.path.join(PIPE, "sd1"))
    msg = str(info.value)
    assert "shape-mismatched" in msg and "cond_stage_model.transformer.embedding_table" in msg
    assert "\n" not in msg


def test_missing_and_unexpected_are_reported():
    model = build_model(_tiny_config(True), lazy_init=True)
    state = {p.name: np.zeros(p.shape, np.float32) for p in model.get_parameters()}
    del state["first_stage_model.quant_conv.weight"]
    state["model.diffusion_model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="1 missing: first_stage_model.quant_conv.weight; "
                                              "1 unexpected: model.diffusion_model.extra.weight"):
        checkpoint.load_params_into(model, state)


def _truncated(src, dst, keep):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("name", ["sd1_text_stability.ckpt", "sd2_text_openclip_legacy.ckpt",
                                  os.path.join("sd1_text_encoder", "model.safetensors")])
def test_truncated_files_raise_checkpoint_error(tmp_path, name):
    path = _truncated(os.path.join(TEXT, name), str(tmp_path / "cut"), 0.5)
    with pytest.raises(CheckpointError):
        read_weight_file(path)


def test_truncated_mindspore_checkpoint(tmp_path):
    good = str(tmp_path / "good.ckpt")
    save_mindspore_checkpoint({"w": np.ones((64, 64), np.float32)}, good)
    with pytest.raises(CheckpointError):
        read_weight_file(_truncated(good, str(tmp_path / "cut.ckpt"), 0.5))


def test_detect_layout():
    assert checkpoint.detect_layout({"cond_stage_model.transformer.embedding_table": 0}) == "mindone"
    assert checkpoint.detect_layout({"first_stage_model.encoder.norm_out.gamma": 0}) == "mindone"
    assert checkpoint.detect_layout({"first_stage_model.encoder.norm_out.weight": 0}) == "stability"
    assert checkpoint.detect_layout({"cond_stage_model.transformer.embeddings.token_embedding.weight": 0,
                                     "model.diffusion_model.out.0.weight": 0}) == "stability"
    assert checkpoint.detect_layout({"cond_stage_model.model.token_embedding.weight": 0}) == "stability"
    assert checkpoint.detect_layout({"unet.conv_in.weight": 0}) == "diffusers"
    with pytest.raises(CheckpointError, match="no known Stable Diffusion layout"):
        checkpoint.detect_layout({"fc.weight": 0})


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        read_weight_file(str(junk))
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read_state_dict(str(tmp_path / "absent.ckpt"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = str(tmp_path / "evil.ckpt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load global"):
        read_weight_file(path)


# ------------------------------------------------------------------ CLI
def _cli(*args):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True, cwd=REPO, env=env)


def _error_lines(proc):
    return [l for l in proc.stderr.splitlines() if l.strip() and "[WARNING]" not in l]


def test_cli_help_explains_flags():
    proc = _cli("-h")
    assert proc.returncode == 0
    for flag in ("--source", "--target", "--config", "--config_out", "--to"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["--target", "out.ckpt"], "--source"),
    (["--source", "/nonexistent/x.ckpt", "--target", "out.ckpt"], "not found"),
    (["--source", os.path.join(TEXT, "sd1_text_stability.ckpt"), "--target", "out.ckpt"], "--config"),
    (["--source", os.path.join(PIPE, "sd1"), "--target", "/tmp/never.ckpt",
      "--config", os.path.join(REPO, "configs", "tiny-v2.yaml")], "shape-mismatched"),
])
def test_cli_bad_input_one_line(args, needle, tmp_path):
    proc = _cli(*args)
    lines = _error_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not os.path.exists("/tmp/never.ckpt")


def test_cli_corrupt_checkpoint(tmp_path):
    path = _truncated(os.path.join(TEXT, "sd1_text_stability.ckpt"), str(tmp_path / "cut.ckpt"), 0.3)
    proc = _cli("--source", path, "--target", str(tmp_path / "o.ckpt"),
                "--config", os.path.join(REPO, "configs", "tiny-v1.yaml"))
    lines = _error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "cut.ckpt" in lines[0]
    assert not os.path.exists(tmp_path / "o.ckpt")


# ------------------------------------------------------------------ full model parity (UNet + VAE + text)
UNET_VAE = os.path.join(FIX, "unet_vae")


def _unet_vae_fixtures():
    with open(os.path.join(UNET_VAE, "ldm_params.json")) as f:
        params = json.load(f)
    with np.load(os.path.join(UNET_VAE, "references.npz")) as data:
        refs = {k: data[k] for k in data.files}
    return params, refs


def _full_config(params, unet, sd1):
    width = params[unet]["context_dim"]
    return {"model": {
        "target": "ldm.models.latent_diffusion.LatentDiffusion", "prediction_type": "eps",
        "params": {"scale_factor": 0.18215, "unet_config": {"target": "ldm.models.unet.UNetModel",
                                                            "params": params[unet]},
                   "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL",
                                          "params": params["vae"]},
                   "cond_stage_config": {"target": "ldm.models.text_encoder.FrozenCLIPEmbedder", "params": {
                       "width": width, "layers": 1, "heads": 2, "output_dim": width,
                       "use_quick_gelu": sd1, "pad_token": "eot" if sd1 else 0}}}}}


def _random_text_tower(width, flavor, layers=1, seed=0):
    """Random tower weights (MindONE names -> ``flavor`` names); text parity is tested elsewhere."""
    rng = np.random.default_rng(seed)
    shapes = {"embedding_table": (49408, width), "positional_embedding": (77, width),
              "ln_final.gamma": (width,), "ln_final.beta": (width,)}
    for i in range(layers):
        b = f"transformer_layer.resblocks.{i}."
        shapes.update({b + "ln_1.gamma": (width,), b + "ln_1.beta": (width,), b + "ln_2.gamma": (width,),
                       b + "ln_2.beta": (width,), b + "attn.attn.in_proj.weight": (3 * width, width),
                       b + "attn.attn.in_proj.bias": (3 * width,), b + "attn.attn.out_proj.weight": (width, width),
                       b + "attn.attn.out_proj.bias": (width,), b + "c_fc.weight": (4 * width, width),
                       b + "c_fc.bias": (4 * width,), b + "c_proj.weight": (width, 4 * width),
                       b + "c_proj.bias": (width,)})
    ours = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in shapes.items()}
    return names_text.text_from_mindone(ours, layers, flavor)


def _check_outputs(model, refs, unet):
    out = model.apply_model(ms.Tensor(refs[f"{unet}_sample"]), ms.Tensor(refs[f"{unet}_timesteps"]),
                            ms.Tensor(refs[f"{unet}_context"])).asnumpy()
    assert np.abs(out - refs[f"{unet}_out"]).max() <= 1e-4
    mean, logvar = model.encode_first_stage(ms.Tensor(refs["vae_image"]))
    assert np.abs(mean.asnumpy() - refs["vae_mean"]).max() <= 1e-4
    assert np.abs(logvar.asnumpy() - refs["vae_logvar"]).max() <= 1e-4
    decoded = model.decode_first_stage(ms.Tensor(refs["vae_latent"] * model.scale_factor)).asnumpy()
    assert np.abs(decoded - refs["vae_decoded"]).max() <= 1e-4


# One UNet style per layout keeps this file fast; the other pairs are covered by the UNet tests
# (name tables) and by the text/pipeline tests above.
@pytest.mark.parametrize("unet", ["unet_sd1"])
def test_stability_layout_full_model_matches_diffusers(unet, tmp_path):
    params, refs = _unet_vae_fixtures()
    sd1 = unet == "unet_sd1"
    cfg = _full_config(params, unet, sd1)
    width = params[unet]["context_dim"]
    state = read_weight_file(os.path.join(UNET_VAE, f"{unet}_stability.safetensors"))
    state.update(read_weight_file(os.path.join(UNET_VAE, "vae_stability.safetensors")))
    if sd1:
        text = _random_text_tower(width, names_text.HF)
        state.update({"cond_stage_model.transformer.text_model." + k: v for k, v in text.items()})
    else:  # OpenCLIP names, one layer more than the config keeps
        text = _random_text_tower(width, names_text.OPEN_CLIP, layers=2)
        state.update({"cond_stage_model.model." + k: v for k, v in text.items()})
    path = str(tmp_path / "stability.safetensors")
    write_safetensors(state, path)
    _check_outputs(checkpoint.load_model(cfg, path), refs, unet)


def _diffusers_folder(root, unet, sd1, width):
    import shutil
    os.makedirs(root)
    shutil.copytree(os.path.join(UNET_VAE, unet), os.path.join(root, "unet"))
    shutil.copytree(os.path.join(UNET_VAE, "vae"), os.path.join(root, "vae"))
    os.makedirs(os.path.join(root, "text_encoder"))
    write_safetensors(_random_text_tower(width, names_text.HF),
                      os.path.join(root, "text_encoder", "model.safetensors"))
    text_cfg = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": 1,
                "num_attention_heads": 2, "hidden_act": "quick_gelu" if sd1 else "gelu",
                "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5}
    sched = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon" if sd1 else "v_prediction"}
    tok = {"pad_token": "<|endoftext|>" if sd1 else "!"}
    for sub, name, content in (("text_encoder", "config.json", text_cfg),
                               ("scheduler", "scheduler_config.json", sched),
                               ("tokenizer", "special_tokens_map.json", tok)):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        with open(os.path.join(root, sub, name), "w") as f:
            json.dump(content, f)
    return root


@pytest.mark.parametrize("unet", ["unet_sd2"])
def test_diffusers_layout_full_model_matches_diffusers(unet, tmp_path):
    params, refs = _unet_vae_fixtures()
    sd1 = unet == "unet_sd1"
    folder = _diffusers_folder(str(tmp_path / "sd"), unet, sd1, params[unet]["context_dim"])
    ckpt, yaml_out = str(tmp_path / "m.ckpt"), str(tmp_path / "m.yaml")
    convert_weights(folder, ckpt, config_out=yaml_out)
    cfg = load_config(yaml_out)
    model_cfg = cfg["model"]
    assert model_cfg["prediction_type"] == ("eps" if sd1 else "v")
    derived = model_cfg["params"]["unet_config"]["params"]
    for key, value in params[unet].items():  # heads: SD1 constant count, SD2 constant width
        assert derived[key] == value, key
    assert model_cfg["params"]["first_stage_config"]["params"]["ddconfig"]["ch_mult"] == [1, 2]
    assert model_cfg["params"]["cond_stage_config"]["params"]["pad_token"] == ("eot" if sd1 else 0)
    _check_outputs(checkpoint.load_model(cfg, ckpt), refs, unet)
