"""Load the tiny diffusers-layout UNet/VAE fixtures into our cells through the name tables (test helper).

Kept independent of ldm.convert.checkpoint so the model tests check the networks and the name tables
on their own; the converter has its own tests.
"""
import json
import os

import numpy as np
from safetensors.numpy import load_file

import mindspore as ms
from mindspore.nn.utils import no_init_parameters

from ldm.convert.names_unet import unet_name_table
from ldm.convert.names_vae import vae_name_table
from ldm.models.autoencoder import AutoencoderKL
from ldm.models.unet import UNetModel

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "unet_vae")


def fixture_params(name):
    with open(os.path.join(FIXTURES, "ldm_params.json")) as f:
        return json.load(f)[name]


def references():
    with np.load(os.path.join(FIXTURES, "references.npz")) as data:
        return {k: data[k] for k in data.files}


def diffusers_state(name):
    """fp16-stored diffusers weights upcast to fp32."""
    state = load_file(os.path.join(FIXTURES, name, "diffusion_pytorch_model.safetensors"))
    return {k: v.astype(np.float32) for k, v in state.items()}


def load_rows(cell, state, rows, column):
    """Copy ``state[row[column]]`` into our parameter ``row[0]`` (1x1 conv <-> linear reshape allowed)."""
    params = {p.name: p for p in cell.get_parameters()}
    assert set(params) == {r[0] for r in rows}, sorted(set(params) ^ {r[0] for r in rows})[:5]
    assert {r[column] for r in rows} == set(state), sorted({r[column] for r in rows} ^ set(state))[:5]
    for row in rows:
        param = params[row[0]]
        value = state[row[column]]
        assert value.size == int(np.prod(param.shape)), (row, value.shape, param.shape)
        param.set_data(ms.Tensor(value.reshape(param.shape), ms.float32))
    return cell


def build_unet(name, **overrides):
    params = dict(fixture_params(name), **overrides)
    with no_init_parameters():
        unet = UNetModel(**params)
    return load_rows(unet, diffusers_state(name), unet_name_table(params), 2)


def build_vae():
    params = fixture_params("vae")
    with no_init_parameters():
        vae = AutoencoderKL(**params)
    return load_rows(vae, diffusers_state("vae"), vae_name_table(params["ddconfig"]), 2)
