"""Is a BLAS-backed custom GEMM (bench/studies/blas_custom.py) faster than MindSpore's own MatMul end to end?

Three levels, each variant interleaved rep after rep in one process, medians (and mins) reported:
  gemm    one product at UNet shapes: ops.MatMul / BatchMatMul vs the aot and pyfunc custom ops vs numpy;
  block   our SpatialTransformer (SD 2.x level 2: 640 ch, 32x32 tokens, 10 heads, context 77x1024, batch 2;
          level 1 at 64x64 needed over 14 GB for three nets' forward and gradient graphs)
          under ms.jit, forward and forward+backward (grads of input and weights), with every Dense and
          attention BatchMatMul swapped for the custom ops (same Parameters, so same numbers) vs as built;
  unet    the tiny UNet (configs/tiny-v2-vpred.yaml) forward and training-step gradients, the same swap.
Before timing, the swapped block's outputs and gradients are compared with the original's (relative
max error printed).

    python bench/studies/bench_custom_gemm.py [--levels gemm block unet] [--reps 5]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

STUDY_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(STUDY_DIR)
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)  # machine
sys.path.insert(0, STUDY_DIR)  # blas_custom
sys.path.insert(0, REPO)


def swap_gemms(net, gemm):
    """Replace every nn.Dense and attention BatchMatMul inside ``net`` by the custom ops in ``gemm`` (the
    attention cores are set to 'standard', whose two products are the swapped ones)."""
    from mindspore import nn, ops
    from ldm.models.attention_ops import AttentionSettings, ScaledDotProductAttention

    class BlasDense(nn.Cell):
        def __init__(self, dense):
            super().__init__()
            names = [q.name for q in (dense.weight, dense.bias) if q is not None]
            self.weight, self.bias, self.has_bias = dense.weight, dense.bias, dense.has_bias
            self.nt = gemm["NT"]
            self.restore = lambda: [setattr(q, "name", n) for q, n in zip((self.weight, self.bias), names)]

        def construct(self, x):
            shape = x.shape
            y = self.nt(x.reshape(-1, shape[-1]), self.weight)
            if self.has_bias:
                y = ops.bias_add(y, self.bias)
            return y.reshape(shape[:-1] + (y.shape[-1],))

    count = 0
    for _, cell in list(net.cells_and_names()):
        if isinstance(cell, ScaledDotProductAttention):
            cell.set_settings(AttentionSettings("standard"))
            cell.bmm_nt, cell.bmm = gemm["NT"], gemm["NN"]
            count += 2
        for child_name, child in list(cell.name_cells().items()):
            if type(child) is nn.Dense:
                if isinstance(cell, nn.SequentialCell):
                    cell[int(child_name)] = BlasDense(child)
                else:
                    setattr(cell, child_name, BlasDense(child))
                count += 1
    for _, cell in net.cells_and_names():     # assigning the Parameters renamed them: keep the full names
        if isinstance(cell, BlasDense):
            cell.restore()
    return count


def interleaved(variants, reps):
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(reps):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _sync(out):
    out = out[0] if isinstance(out, (tuple, list)) else out
    out.reshape(-1)[:1].asnumpy()


def level_gemm(reps, ops_by_flavour):
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    rng = np.random.default_rng(0)

    class Apply(nn.Cell):
        def __init__(self, op):
            super().__init__()
            self.op = op

        def construct(self, a, b):
            return self.op(a, b)

    cases = {"dense 8192x320->2560": ((8192, 320), (2560, 320), "NT"),
             "dense 8192x1280->320": ((8192, 1280), (320, 1280), "NT"),
             "scores (10,4096,64)x(10,4096,64)^T": ((10, 4096, 64), (10, 4096, 64), "NT"),
             "attn_av (10,4096,4096)x(10,4096,64)": ((10, 4096, 4096), (10, 4096, 64), "NN"),
             "square 2048": ((2048, 2048), (2048, 2048), "NT")}
    out = {}
    for name, (sa, sb, p) in cases.items():
        a, b = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
        A, Bt = Tensor(a), Tensor(b)
        own = (ops.MatMul(transpose_b=True) if len(sa) == 2 else ops.BatchMatMul(transpose_b=True)) if p == "NT" \
            else ops.BatchMatMul()
        variants = {"numpy": (lambda a=a, b=b, p=p: np.matmul(a, np.swapaxes(b, -1, -2) if p == "NT" else b))}
        for label, op in [("MindSpore MatMul/BatchMatMul graph", own)] + \
                [(f"custom {f} graph", o[p]) for f, o in ops_by_flavour.items()]:
            fn = ms.jit(Apply(op).construct)
            variants[label] = (lambda fn=fn: _sync(fn(A, Bt)))
        fl = 2 * np.prod(sa) * (sb[-2] if p == "NT" else sb[-1])
        out[name] = dict(gflop=float(fl / 1e9), times=interleaved(variants, reps))
        print(f"  gemm {name} done", file=sys.stderr, flush=True)
    return out


def _block_setup():
    import mindspore as ms
    from mindspore import Tensor
    from ldm.models.attention import SpatialTransformer
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 640, 32, 32), dtype=np.float32))
    ctx = Tensor(rng.standard_normal((2, 77, 1024), dtype=np.float32))

    def build():
        ms.set_seed(0)
        st = SpatialTransformer(640, 10, 64, depth=1, context_dim=1024, use_linear=True)
        for p in st.get_parameters():   # proj_out is zero-initialised: give every weight values
            p.set_data(Tensor(np.random.default_rng(abs(hash(p.name)) % 2 ** 32).standard_normal(
                p.shape).astype(np.float32) * 0.05))
        return st
    return build, (x, ctx)


def _grad_fn(net, n_inputs):
    import mindspore as ms
    from mindspore import ops

    def loss(*args):
        return ops.square(net(*args)).mean()
    return ms.jit(ms.value_and_grad(loss, grad_position=tuple(range(n_inputs)), weights=net.trainable_params()))


def _rel(a, b):
    a, b = a.asnumpy(), b.asnumpy()
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def level_net(reps, ops_by_flavour, build, inputs, label):
    import mindspore as ms
    nets = {"as built (MindSpore MatMul/BatchMatMul)": build()}
    swapped = {}
    for f, o in ops_by_flavour.items():
        nets[f"custom {f}"] = build()
        swapped[f] = swap_gemms(nets[f"custom {f}"], o)
    for n in nets.values():
        n.set_train(False)
    fwd = {k: ms.jit(n.construct) for k, n in nets.items()}
    grads = {k: _grad_fn(n, len(inputs)) for k, n in nets.items()}
    base = next(iter(nets))
    check = {}
    y0 = fwd[base](*inputs)
    l0, (gi0, gw0) = grads[base](*inputs)
    by_name0 = {q.name: g for q, g in zip(nets[base].trainable_params(), gw0)}
    for k in list(nets)[1:]:
        lk, (gik, gwk) = grads[k](*inputs)
        by_name = {q.name: g for q, g in zip(nets[k].trainable_params(), gwk)}
        assert sorted(by_name) == sorted(by_name0), "swapped net has other parameters"
        # weight grads: max abs difference over all parameters / largest gradient entry (a per-parameter ratio
        # blows up on parameters whose gradient is ~1e-12 here)
        scale = max(float(np.abs(g.asnumpy()).max()) for g in by_name0.values())
        check[k] = dict(forward=_rel(fwd[k](*inputs), y0), input_grads=max(_rel(a, b) for a, b in zip(gik, gi0)),
                        weight_grads=max(float(np.abs(by_name[n].asnumpy() - by_name0[n].asnumpy()).max())
                                         for n in by_name0) / scale)
    print(f"  {label}: swapped {swapped}; max relative error vs as built: {check}", file=sys.stderr, flush=True)
    variants = {f"{k} forward": (lambda f=f: _sync(f(*inputs))) for k, f in fwd.items()}
    variants.update({f"{k} fwd+bwd": (lambda g=g: _sync(g(*inputs)[0])) for k, g in grads.items()})
    return dict(swapped=swapped, errors=check, times=interleaved(variants, reps))


def _tiny_unet():
    import mindspore as ms
    import yaml
    from mindspore import Tensor
    from ldm.util import instantiate_from_config
    with open(os.path.join(REPO, "configs", "tiny-v2-vpred.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)["model"]["params"]["unet_config"]
    p = cfg["params"]
    rng = np.random.default_rng(0)
    inputs = (Tensor(rng.standard_normal((4, p["in_channels"], 16, 16), dtype=np.float32)),
              Tensor(np.array([10, 200, 500, 999], np.int32)),
              Tensor(rng.standard_normal((4, 77, p["context_dim"]), dtype=np.float32)))

    def build():
        ms.set_seed(0)
        net = instantiate_from_config(cfg)
        for q in net.get_parameters():
            q.set_data(Tensor(np.random.default_rng(abs(hash(q.name)) % 2 ** 32).standard_normal(
                q.shape).astype(np.float32) * 0.05))
        return net
    return build, inputs


def table(name, res):
    lines = []
    times = res["times"]
    first = next(iter(times))
    for k, ts in times.items():
        if k.endswith("fwd+bwd") and not first.endswith("fwd+bwd"):
            first = k
        ref = times[first]
        lines.append(f"| {name} | {k} | {1e3 * statistics.median(ts):.1f} | {1e3 * min(ts):.1f} | "
                     f"{statistics.median(ref) / statistics.median(ts):.2f} |"
                     + (f" {res['gflop'] / statistics.median(ts):.0f} |" if "gflop" in res else " - |"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", nargs="*", default=["gemm", "block", "unet"], choices=["gemm", "block", "unet"])
    parser.add_argument("--flavours", nargs="*", default=["aot", "pyfunc"], choices=["aot", "pyfunc"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_custom_gemm.json"))
    args = parser.parse_args(argv)
    import mindspore as ms
    import blas_custom
    from machine import load_average
    ms.set_device("CPU")
    ops_by_flavour = {f: blas_custom.make_ops(f) for f in args.flavours}
    report = dict(load_before=load_average(), reps=args.reps)
    lines = [f"median of {args.reps} interleaved reps; speed-up = time of the first variant of its kind / this one",
             "", "| case | variant | median ms | min ms | speed-up | GFLOP/s |", "|---|---|---|---|---|---|"]
    if "gemm" in args.levels:
        for name, res in level_gemm(args.reps, ops_by_flavour).items():
            report[f"gemm {name}"] = res
            lines += table(name, res)
        print("\n".join(lines), flush=True)
    if "block" in args.levels:
        build, inputs = _block_setup()
        res = report["block"] = level_net(args.reps, ops_by_flavour, build, inputs, "SpatialTransformer 640ch 32x32")
        lines += table("SpatialTransformer 640 ch 32x32 b2", res)
        print("\n".join(lines[-len(res["times"]):]), flush=True)
    if "unet" in args.levels:
        build, inputs = _tiny_unet()
        res = report["unet"] = level_net(args.reps, ops_by_flavour, build, inputs, "tiny UNet")
        lines += table("tiny UNet b4 16x16", res)
        print("\n".join(lines[-len(res["times"]):]), flush=True)
    report["load_after"] = load_average()
    print("\n(all)\n" + "\n".join(lines))
    for k in ("block", "unet"):
        if k in report:
            print(f"{k}: GEMMs swapped {report[k]['swapped']}, max relative error vs as built {report[k]['errors']}")
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
