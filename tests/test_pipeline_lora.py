"""--lora_ckpt_path / --lora_scale: a LoRA file changes the images by its scale; scale 0 is the base model."""
import mindspore as ms
import numpy as np
import pytest

from ldm.convert.checkpoint import load_model
from ldm.pipeline import Text2ImagePipeline
from ldm.models.lora import inject_lora, lora_layers, save_lora
from ldm.util import load_config
from pipeline_models import converted

KW = dict(negative_prompt="blurry", width=64, height=64, steps=2, sampler="ddim", scale=5.0, seed=3, num_images=2)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    config, ckpt = converted("sd2")
    model = load_model(load_config(config), ckpt)
    inject_lora(model, rank=2)
    rng = np.random.default_rng(0)
    for cell in lora_layers(model):          # trained-looking adapters (up starts at zero)
        cell.lora_up.set_data(ms.Tensor(rng.normal(0, 0.5, cell.lora_up.shape).astype(np.float32)))
    path = str(tmp_path_factory.mktemp("lora") / "lora.ckpt")
    save_lora(model, path)
    return path


def test_lora_scale(lora_file):
    config, ckpt = converted("sd2")
    base = Text2ImagePipeline.from_config(config, ckpt, compile=False)("a cat", **KW)
    off = Text2ImagePipeline.from_config(config, ckpt, lora_path=lora_file, lora_scale=0.0, compile=False)("a cat", **KW)
    on = Text2ImagePipeline.from_config(config, ckpt, lora_path=lora_file, lora_scale=1.0, compile=False)("a cat", **KW)
    assert np.abs(off.astype(int) - base).max() <= 1
    assert np.abs(on.astype(int) - base).mean() > 1
