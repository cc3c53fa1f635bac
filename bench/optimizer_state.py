"""Optimiser state size for a full model: bytes each optimiser keeps per trained parameter, for the UNet alone
and for UNet + text encoder (train_text_encoder), from the shapes of the model a config builds.

Adafactor's factored state depends on the shapes (it factors the last two dimensions of every >= 2-D tensor),
so the count uses every parameter's shape, from the model built lazily (no weights allocated; seconds):

    python bench/optimizer_state.py [--config configs/v2-vpred-inference.yaml] [--out bench/results_optimizer_state.md]

The numbers come from ldm.train.optim_args.state_bytes, the function the training log's
"optimizer NAME: state ..." line agrees with (tests/test_optimizers.py checks it against the allocated state).
"""
import argparse
import math
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))

from ldm.train.optim_args import optimizer_settings, state_bytes  # noqa: E402

# (optimiser, optimizer_args) rows: the defaults, plus the variants kohya-ss users pick
ROWS = [("adamw", {}), ("adam", {}), ("momentum", {}), ("sgd", {}), ("lion", {}), ("lamb", {}),
        ("adafactor", {}), ("adafactor", {"beta1": 0.9}), ("prodigy", {}), ("prodigy", {"slice_p": 11})]


def model_shapes(config_path):
    """(UNet shapes, text-encoder shapes) of the model ``config_path`` builds (lazily: no weights)."""
    import mindspore as ms
    ms.set_device("CPU")
    from ldm.models.latent_diffusion import build_model
    from ldm.util import load_config
    model = build_model(load_config(config_path), lazy_init=True)
    unet = [tuple(int(d) for d in p.shape) for p in model.diffusion_model.get_parameters()]
    text = [tuple(int(d) for d in p.shape) for p in model.cond_stage_model.get_parameters()]
    return unet, text


def table(unet, text):
    n_unet, n_all = sum(math.prod(s) for s in unet), sum(math.prod(s) for s in unet + text)
    lines = ["| optim | optimizer_args | bytes / parameter (UNet) | UNet state | UNet + text encoder state |",
             "|---|---|---:|---:|---:|"]
    for name, options in ROWS:
        settings = optimizer_settings(name, options=options)
        only_unet, both = state_bytes(name, unet, settings), state_bytes(name, unet + text, settings)
        args = " ".join(f"{k}={v}" for k, v in options.items()) or "(defaults)"
        lines.append(f"| {name} | {args} | {only_unet / n_unet:.2f} | {only_unet / 2 ** 30:.2f} GiB | "
                     f"{both / 2 ** 30:.2f} GiB |")
    head = (f"{len(unet)} UNet tensors, {n_unet / 1e6:.1f} M parameters (fp32 weights {4 * n_unet / 2 ** 30:.2f} GiB, "
            f"gradients as much); with the text encoder {len(unet + text)} tensors, {n_all / 1e6:.1f} M parameters.")
    return head, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--config", default="configs/v2-vpred-inference.yaml")
    parser.add_argument("--out", default="", help="write the markdown report here (e.g. "
                                                  "bench/results_optimizer_state.md)")
    args = parser.parse_args(argv)
    from machine import machine_line, machine_record
    head, rows = table(*model_shapes(args.config))
    report = (f"# Optimiser state size\n\n`python bench/optimizer_state.py --config {args.config}` "
              f"(the shapes do not depend on the machine; recorded on {machine_line(machine_record())}).\n\n"
              f"{head}\n\n{rows}\n\n"
              "State is float32 and sits beside the fp32 weights and gradients. sgd keeps (zero) moments as momentum "
              "does. Adafactor factors the last two dimensions of every >= 2-D tensor (transformers' rule): a 3x3 conv "
              "keeps 6 of 9 values per (out, in) pair, a 1x1 conv [O, I, 1, 1] two [O, I, 1] (twice one full copy), a "
              "matrix its row and column means, a 1-D tensor its full second moment. Prodigy keeps m, v, s and p0 (s "
              "and p0 of every slice_p-th element).\n")
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, BENCH_DIR)
    sys.exit(main())
