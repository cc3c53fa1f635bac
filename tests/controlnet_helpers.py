"""ControlNet weight files for the tests, rebuilt from tests/fixtures/controlnet (configs + reference outputs)
and tests/fixtures/controlnet_seeded.py (the weights: a function of the diffusers name and a seed).

``diffusers_folder`` writes a diffusers ControlNetModel folder (config.json + safetensors), ``lllyasviel_file``
a ``control_model.*`` torch zip (.pth) as lllyasviel's files are, ``mindone_file`` the same weights under MindONE's
MindSpore names in a .ckpt; all three hold the same numbers, so every loader must give the references.
"""
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures", "controlnet")
sys.path.insert(0, os.path.join(HERE, "fixtures"))
from controlnet_seeded import residual_inputs, weight  # noqa: E402

REFS = np.load(os.path.join(FIXTURES, "references.npz"))
SETTINGS = json.loads(str(REFS["settings_json"]))


def diffusers_config(style):
    with open(os.path.join(FIXTURES, style, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def diffusers_state(style, seed):
    """{diffusers name: float32 array} of ControlNet ``seed`` (1 or 2) for fixture ``style``."""
    shapes = json.loads(str(REFS[f"{style}_names_json"]))
    return {name: weight(name, shape, seed) for name, shape in shapes.items()}


def params(style):
    from ldm.convert.controlnet import params_from_diffusers
    return params_from_diffusers(diffusers_config(style))


def diffusers_folder(style, seed, folder):
    from ldm.convert.readers import write_safetensors
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(FIXTURES, style, "config.json"), os.path.join(folder, "config.json"))
    write_safetensors(diffusers_state(style, seed), os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    return folder


def _renamed(style, seed, column):
    from ldm.convert.names_controlnet import controlnet_name_table
    state = diffusers_state(style, seed)
    return {row[column]: state[row[2]] for row in controlnet_name_table(params(style))}


def lllyasviel_file(style, seed, path, prefix="control_model.", dtype=np.float16, extra=None):
    """A torch zip file (torch.save layout) of lllyasviel names under ``prefix``, stored as ``dtype``;
    ``extra``: more {name: array} (e.g. a base model's tensors, as the full control_sd15_*.pth files hold)."""
    from fuzz_weights import pickle_bytes, tensor_call, torch_zip
    tensors = {prefix + k: v for k, v in _renamed(style, seed, 1).items()}
    tensors.update(extra or {})
    storages, obj = {}, {}
    for i, (name, value) in enumerate(tensors.items()):
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        cls = {np.dtype(np.float16): "HalfStorage", np.dtype(np.float32): "FloatStorage"}[arr.dtype]
        storages[str(i)] = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        stride = tuple(int(np.prod(arr.shape[d + 1:])) for d in range(arr.ndim))
        obj[name] = tensor_call(str(i), cls, arr.size, 0, tuple(arr.shape), stride)
    with open(path, "wb") as f:
        f.write(torch_zip(pickle_bytes({"state_dict": obj}), storages))
    return path


def mindone_file(style, seed, path, prefix="model.diffusion_model.controlnet."):
    """A MindSpore .ckpt of MindONE names under ``prefix`` (MindONE's later ControlnetUnetModel layout)."""
    import mindspore as ms
    params_list = [{"name": prefix + k, "data": ms.Tensor(v)} for k, v in _renamed(style, seed, 0).items()]
    ms.save_checkpoint(params_list, path)
    return path


def inputs(style, ms_tensors=True):
    cfg = diffusers_config(style)
    x, t, context, hint = residual_inputs(SETTINGS["style_seed"][style], context_dim=cfg["cross_attention_dim"],
                                          hint_factor=2 ** (len(SETTINGS["hint_channels"]) - 1))
    if not ms_tensors:
        return x, t, context, hint
    import mindspore as ms
    return tuple(ms.Tensor(a) for a in (x, t, context, hint))


def references(style, key="residual"):
    out, k = [], 0
    while f"{style}_{key}_{k}" in REFS.files:
        out.append(REFS[f"{style}_{key}_{k}"])
        k += 1
    return out


TINY_CONFIG = os.path.join(REPO, "configs", "tiny-shapes-controlnet.yaml")
TINY_BASE = os.path.join(REPO, "models", "tiny_shapes_base.ckpt")


def tiny_shapes_controlnet(path, seed=0, config=TINY_CONFIG):
    """A ControlNet for the demo model (configs/tiny-shapes-controlnet.yaml) with random weights, zero convs
    included (so the control shows), saved as our .ckpt."""
    import mindspore as ms

    from ldm.convert.controlnet import save_controlnet, yaml_controlnet_params
    from ldm.models.controlnet import ControlNetModel
    net = ControlNetModel(**yaml_controlnet_params(config))
    rng = np.random.default_rng(seed)
    for param in net.get_parameters():
        if param.name.startswith(("zero_convs.", "middle_block_out.", "input_hint_block.")):
            param.set_data(ms.Tensor((rng.standard_normal(param.shape) * 0.05).astype(np.float32)))
    return save_controlnet(net, path)
