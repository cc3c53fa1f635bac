"""Top ops of a UNet forward or training step under ``ms.jit``, from MindSpore's own profiler.

Runs ``--warmup`` untimed calls (compilation), then ``--steps`` calls inside ``mindspore.Profiler`` and
reads its CPU op tables (FRAMEWORK/cpu_op_type_info_0.csv, cpu_op_detail_info_0.csv): time per step by
op type, and by the layer the op sits in (the scope name's innermost Cell class, e.g. GroupNorm,
CrossAttention, Conv2d). Models: tiny (configs/tiny-v2-vpred.yaml, batch 4, 16x16 latents, as
bench_train's tiny case) and sd2 (configs/v2-inference.yaml, batch 2, 64x64 latents, as bench_models).

    python bench/studies/profile_unet.py --model tiny --what train [--steps 3] [--top 15]
"""
import argparse
import collections
import csv
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, REPO)
MODELS = {"tiny": ("configs/tiny-v2-vpred.yaml", 4, 16), "sd2": ("configs/v2-inference.yaml", 2, 64)}


def build(model):
    import yaml
    from mindspore import Tensor
    from ldm.util import instantiate_from_config
    config, batch, side = MODELS[model]
    with open(os.path.join(REPO, config), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)["model"]["params"]["unet_config"]
    p = cfg["params"]
    net = instantiate_from_config(cfg)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, p["in_channels"], side, side), dtype=np.float32))
    t = Tensor(rng.integers(0, 1000, batch).astype(np.int32))
    c = Tensor(rng.standard_normal((batch, 77, p["context_dim"]), dtype=np.float32))
    target = Tensor(rng.standard_normal((batch, p["out_channels"], side, side), dtype=np.float32))
    return net, (x, t, c), target


def step_fn(net, what, target):
    import mindspore as ms
    from mindspore import Tensor, ops
    if what == "forward":
        net.set_train(False)
        return ms.jit(net.construct)
    from ldm.train.optim import AdamW
    params = net.trainable_params()
    opt = AdamW(params, (0.9, 0.999), 1e-8, 1e-2)
    lr = Tensor(np.float32(1e-5))

    def loss_fn(x, t, c):
        return ops.square(net(x, t, c) - target).mean()
    grad_fn = ms.value_and_grad(loss_fn, None, params)

    def train_step(x, t, c):
        loss, grads = grad_fn(x, t, c)
        opt(grads, lr)
        return loss
    return ms.jit(train_step)


def _layer(full_name):
    """Innermost Cell class in a scope like Default/input_blocks-CellList/1-TimestepEmbedSequential/
    0-ResBlock/in_layers-SequentialCell/0-GroupNorm/GroupNorm-op3; backward ops of a training graph are
    named Gradients/Default/Grad_Conv2D/... (no Cell left), so those are grouped by the forward op."""
    parts = full_name.split("/")
    grad = [p for p in parts if p.startswith("Grad_")]
    if full_name.startswith("Gradients") and grad:      # training graphs keep only the op: Grad_Conv2D
        return "bwd of " + grad[-1][len("Grad_"):]
    kinds = [p.split("-", 1)[1] for p in parts[:-1] if "-" in p]
    kinds = [k for k in kinds if k not in ("CellList", "SequentialCell", "TimestepEmbedSequential")]
    side = "bwd " if full_name.startswith("Gradients") else ""
    return side + (kinds[-1] if kinds else parts[0])


def read_profile(folder, steps):
    types = glob.glob(os.path.join(folder, "**", "cpu_op_type_info_0.csv"), recursive=True)
    details = glob.glob(os.path.join(folder, "**", "cpu_op_detail_info_0.csv"), recursive=True)
    if not types or not details:
        raise SystemExit(f"no CPU op tables under {folder}")
    by_type = []
    with open(types[0], encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_type.append(dict(op_type=row["op_type"], ms_per_step=float(row["total_compute_time"]) / steps,
                                calls_per_step=int(row["type_occurrences"]) / steps))
    by_layer = collections.defaultdict(float)
    n_ops = 0
    with open(details[0], encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_layer[_layer(row["full_op_name"])] += float(row["op_total_time(ms)"]) / steps
            n_ops += int(row["op_occurrences"])
    by_type.sort(key=lambda r: -r["ms_per_step"])
    return dict(by_type=by_type, by_layer=sorted(by_layer.items(), key=lambda kv: -kv[1]),
                kernels_per_step=n_ops / steps, kernel_ms_per_step=sum(r["ms_per_step"] for r in by_type))


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--what", choices=("forward", "train"), default="forward")
    parser.add_argument("--steps", type=int, default=3, help="profiled calls")
    parser.add_argument("--warmup", type=int, default=2, help="calls before the profiler starts")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json_out", default="")
    args = parser.parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    sys.path.insert(0, BENCH_DIR)
    from machine import load_average
    net, inputs, target = build(args.model)
    fn = step_fn(net, args.what, target)
    for _ in range(args.warmup):
        fn(*inputs).asnumpy()
    folder = tempfile.mkdtemp(prefix="msd_profile_")
    load_before = load_average()
    prof = ms.Profiler(output_path=folder)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        fn(*inputs).asnumpy()
    wall = (time.perf_counter() - t0) / args.steps
    prof.stop()
    prof.analyse()
    res = read_profile(folder, args.steps)
    res.update(model=args.model, what=args.what, steps=args.steps, wall_ms_per_step=1e3 * wall,
               load_before=load_before, load_after=load_average(), folder=folder)
    print(f"{args.model} UNet {args.what} under ms.jit, {args.steps} profiled steps: {1e3 * wall:.0f} ms/step wall "
          f"(profiler on), {res['kernel_ms_per_step']:.0f} ms/step in {res['kernels_per_step']:.0f} kernels; "
          f"load average {load_before} -> {res['load_after']}")
    print("\n| op type | ms/step | % of kernel time | calls/step |\n|---|---|---|---|")
    for r in res["by_type"][:args.top]:
        print(f"| {r['op_type']} | {r['ms_per_step']:.1f} | {100 * r['ms_per_step'] / res['kernel_ms_per_step']:.1f} | "
              f"{r['calls_per_step']:.0f} |")
    print("\n| layer (innermost Cell of the op's scope) | ms/step | % |\n|---|---|---|")
    for name, ms_ in res["by_layer"][:args.top]:
        print(f"| {name} | {ms_:.1f} | {100 * ms_ / res['kernel_ms_per_step']:.1f} |")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
