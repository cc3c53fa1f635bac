"""Chunked attention == standard attention on the full-size SD 2.x UNet (866 M parameters), forward and gradients.

Run by tests/test_attention_full_unet.py in its own interpreter (the UNet's 3.5 GB should not stay in the
test process). Every weight is set non-zero (the zero-initialised output projections would otherwise hide
the attention from the output), the latents are 8x8 (64 tokens) and the chunk is 16 query rows, so each
self-attention runs as 4 chunks and each cross-attention (77 keys) too. PyNative: no graph to compile
for a one-off comparison. Prints one JSON line: the largest differences and magnitudes.
"""
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
    import mindspore as ms
    from mindspore.nn.utils import no_init_parameters

    from ldm.models.attention_ops import AttentionSettings, apply_settings
    from ldm.util import instantiate_from_config, load_config
    ms.set_context(mode=ms.PYNATIVE_MODE)
    config = load_config(os.path.join(REPO, "configs", "v2-vpred-inference.yaml"))
    with no_init_parameters():
        unet = instantiate_from_config(config["model"]["params"]["unet_config"])
    rng = np.random.default_rng(0)
    pattern = rng.standard_normal(1 << 20).astype(np.float32)
    for i, p in enumerate(unet.get_parameters()):
        fan_in = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1
        p.set_data(ms.Tensor(np.resize(np.roll(pattern, i), p.shape) / np.float32(np.sqrt(fan_in))))
    x = ms.Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    t = ms.Tensor(np.array([10, 900], np.int32))
    context = ms.Tensor(rng.standard_normal((2, 77, 1024)).astype(np.float32))
    w = ms.Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    # gradients for the input and for the q/k/v/out weights of a top-level self-attention and the middle
    # block's cross-attention (the ones the attention path touches first)
    watched = [p for p in unet.get_parameters() if ".attn1.to_" in p.name and p.name.startswith("input_blocks.1.")
               or ".attn2.to_" in p.name and p.name.startswith("middle_block.")]

    def loss(x):
        out = unet(x, t, context)
        return (out * w).sum(), out

    grad = ms.value_and_grad(loss, grad_position=0, weights=watched, has_aux=True)
    results = {}
    for mode in ("standard", "chunked"):
        apply_settings(unet, AttentionSettings(mode, 16))
        (_, out), (gx, gw) = grad(x)
        results[mode] = [out.asnumpy(), gx.asnumpy()] + [g.asnumpy() for g in gw]
    names = ["output", "d_input"] + [p.name for p in watched]
    diffs = {n: float(np.abs(a - b).max()) for n, a, b in zip(names, results["standard"], results["chunked"])}
    scale = {n: float(np.abs(a).max()) for n, a in zip(names, results["standard"])}
    print(json.dumps(dict(diff=diffs, magnitude=scale, parameters=sum(int(np.prod(p.shape))
                                                                        for p in unet.get_parameters()))))


if __name__ == "__main__":
    main()
