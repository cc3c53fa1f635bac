"""GFLOP/s of the ops the SD 2.x UNet lowers to, at its own shapes: which MindSpore op reaches BLAS speed?

Shapes are those of one SD 2.x UNet call at 64x64 latents, batch 2 (a CFG pair): attention projections
and FF Dense layers as (tokens, in) x (in, out) GEMMs, self-attention scores and attn @ v as batched
matmuls over (batch * heads), cross-attention over 77 context tokens, proj_in as Dense vs 1x1 Conv2d,
3x3 convs at 320/640/1280 channels, GroupNorm. For each case the MindSpore variants (ops.MatMul,
nn.Dense, mint.matmul, ops.BatchMatMul, mint.bmm, Conv2d; PyNative and ``ms.jit`` graph) run interleaved
with numpy (OpenBLAS) in one process, rep after rep, and we report medians: on a shared machine the
load moves every absolute number, so read the ratios to numpy measured in the same process. With
``--torch_python`` (or $TORCH_PYTHON) the same cases run under torch in a second process, again next to
numpy there, so torch is compared through its own process's numpy.

    python bench/bench_ops.py [--cases attn ff conv ...] [--reps 5] [--torch_python PY]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
B = 2                    # UNet batch (one image + its unconditional twin)


def _cases():
    """name -> (group, kind, shape dict, GFLOP)."""
    out = {}
    # SD 2.x: level (tokens, channels, heads of 64): (4096, 320, 5), (1024, 640, 10), (256, 1280, 20)
    for n, c, h in ((4096, 320, 5), (1024, 640, 10), (256, 1280, 20)):
        m = B * n
        out[f"qkv_proj {m}x{c}->{c}"] = ("proj", "gemm", dict(m=m, k=c, n=c))
        out[f"ff_geglu {m}x{c}->{8 * c}"] = ("ff", "gemm", dict(m=m, k=c, n=8 * c))
        out[f"ff_out {m}x{4 * c}->{c}"] = ("ff", "gemm", dict(m=m, k=4 * c, n=c))
        out[f"attn_scores ({B * h},{n},64)x({B * h},{n},64)^T"] = ("attn", "bmm", dict(b=B * h, m=n, k=64, n=n, tb=True))
        out[f"attn_av ({B * h},{n},{n})x({B * h},{n},64)"] = ("attn", "bmm", dict(b=B * h, m=n, k=n, n=64, tb=False))
        out[f"xattn_scores ({B * h},{n},64)x({B * h},77,64)^T"] = ("attn", "bmm", dict(b=B * h, m=n, k=64, n=77, tb=True))
        out[f"proj_in 1x1conv ({B},{c},{int(n ** .5)}^2)"] = ("proj", "conv", dict(b=B, c=c, hw=int(n ** .5), o=c, k=1))
        out[f"conv3x3 ({B},{c},{int(n ** .5)}^2)->{c}"] = ("conv", "conv", dict(b=B, c=c, hw=int(n ** .5), o=c, k=3))
        out[f"groupnorm32 ({B},{c},{int(n ** .5)}^2)"] = ("norm", "gn", dict(b=B, c=c, hw=int(n ** .5)))
    out["conv3x3 (2,1280,8^2)->1280"] = ("conv", "conv", dict(b=B, c=1280, hw=8, o=1280, k=3))
    out["square 2048^3"] = ("ref", "gemm", dict(m=2048, k=2048, n=2048))
    for name, (group, kind, s) in out.items():
        if kind == "gemm":
            fl = 2 * s["m"] * s["k"] * s["n"]
        elif kind == "bmm":
            fl = 2 * s["b"] * s["m"] * s["k"] * s["n"]
        elif kind == "conv":
            fl = 2 * s["b"] * s["o"] * s["hw"] ** 2 * s["c"] * s["k"] ** 2
        else:
            fl = 8 * s["b"] * s["c"] * s["hw"] ** 2        # nominal: a few passes over the tensor
        out[name] = (group, kind, s, fl / 1e9)
    return out


CASES = _cases()
GROUPS = sorted({g for g, *_ in CASES.values()})


def _data(kind, s, rng):
    f = np.float32
    if kind == "gemm":
        return rng.standard_normal((s["m"], s["k"]), dtype=f), rng.standard_normal((s["n"], s["k"]), dtype=f) * 0.05
    if kind == "bmm":
        b_shape = (s["b"], s["n"], s["k"]) if s["tb"] else (s["b"], s["k"], s["n"])
        return rng.standard_normal((s["b"], s["m"], s["k"]), dtype=f), rng.standard_normal(b_shape, dtype=f)
    if kind == "conv":
        return (rng.standard_normal((s["b"], s["c"], s["hw"], s["hw"]), dtype=f),
                rng.standard_normal((s["o"], s["c"], s["k"], s["k"]), dtype=f) * 0.05)
    return rng.standard_normal((s["b"], s["c"], s["hw"], s["hw"]), dtype=f), None


# ------------------------------------------------------------------ numpy (OpenBLAS), both processes
def _np_conv(x, w):
    """3x3 'same' conv as im2col + one GEMM (what a BLAS-backed custom conv would do)."""
    b, c, hgt, wid = x.shape
    o, _, k, _ = w.shape
    if k == 1:
        return np.matmul(w.reshape(o, c), x.reshape(b, c, hgt * wid)).reshape(b, o, hgt, wid)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))       # b c h w k k
    cols = np.ascontiguousarray(cols.transpose(0, 2, 3, 1, 4, 5)).reshape(b * hgt * wid, c * k * k)
    return (cols @ w.reshape(o, -1).T).reshape(b, hgt, wid, o).transpose(0, 3, 1, 2)


def _np_gn(x, groups=32, eps=1e-6):
    b, c = x.shape[:2]
    g = x.reshape(b, groups, -1)
    mean = g.mean(-1, keepdims=True)
    var = g.var(-1, keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def numpy_variants(kind, s, a, w):
    if kind == "gemm":
        return {"numpy a@w.T": lambda: a @ w.T}
    if kind == "bmm":
        return {"numpy matmul": (lambda: np.matmul(a, w.transpose(0, 2, 1))) if s["tb"] else (lambda: np.matmul(a, w))}
    if kind == "conv":
        return {"numpy im2col+gemm": lambda: _np_conv(a, w)}
    return {"numpy groupnorm": lambda: _np_gn(a)}


# ------------------------------------------------------------------ MindSpore
def _ms_cells():
    """Cells whose bound ``construct`` ms.jit compiles (ms.jit refuses inline lambdas)."""
    from mindspore import mint, nn, ops

    class Apply(nn.Cell):
        def __init__(self, op):
            super().__init__()
            self.op = op

        def construct(self, *args):
            return self.op(*args)

    class GroupNormFn(nn.Cell):
        def __init__(self, gamma, beta):
            super().__init__()
            self.gamma, self.beta = gamma, beta

        def construct(self, x):
            return mint.nn.functional.group_norm(x, 32, self.gamma, self.beta, 1e-6)

    class MintConv(nn.Cell):
        def __init__(self, pad):
            super().__init__()
            self.pad = pad

        def construct(self, x, w):
            return mint.nn.functional.conv2d(x, w, None, 1, self.pad)

    class ComposedGroupNorm(nn.Cell):
        """GroupNorm from ReduceMean and elementwise ops (a candidate replacement of the fused kernel)."""

        def __init__(self, gamma, beta):
            super().__init__()
            self.gamma, self.beta = gamma, beta

        def construct(self, x):
            b, c, h, w = x.shape
            g = x.reshape(b, 32, -1)
            mean = g.mean(-1, keep_dims=True)
            d = g - mean
            var = (d * d).mean(-1, keep_dims=True)
            y = (d * ops.rsqrt(var + 1e-6)).reshape(b, c, h * w)
            return (y * self.gamma.reshape(1, c, 1) + self.beta.reshape(1, c, 1)).reshape(b, c, h, w)

    class LayerNormGroupNorm(nn.Cell):
        """GroupNorm as the LayerNorm kernel over (B, 32, C/32*H*W) rows, then the per-channel affine."""

        def __init__(self, gamma, beta, n):
            super().__init__()
            self.gamma, self.beta = gamma, beta
            self.ones, self.zeros = ops.ones(n, gamma.dtype), ops.zeros(n, gamma.dtype)
            self.ln = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-6)

        def construct(self, x):
            b, c, h, w = x.shape
            y, _, _ = self.ln(x.reshape(b, 32, -1), self.ones, self.zeros)
            y = y.reshape(b * c, h * w) * ops.tile(self.gamma, (b,)).reshape(b * c, 1)
            return ops.bias_add(y.reshape(b, c, h, w), self.beta)

    return Apply, GroupNormFn, MintConv, ComposedGroupNorm, LayerNormGroupNorm, ops


def _sync(out):
    """PyNative returns before the kernel ends: read one element back to wait for it (a full asnumpy
    would time a copy of e.g. 671 MB of attention scores too)."""
    out.reshape(-1)[:1].asnumpy()


def mindspore_variants(kind, s, a, w):
    import mindspore as ms
    from mindspore import Tensor, mint, nn
    Apply, GroupNormFn, MintConv, ComposedGroupNorm, LayerNormGroupNorm, ops = _ms_cells()
    A, W = Tensor(a), (Tensor(w) if w is not None else None)
    out = {}

    def add(name, fn, *args, graph=False):
        if graph:
            fn = ms.jit(fn.construct)

        def call():
            _sync(fn(*args))
        out[name] = call

    if kind == "gemm":
        wt = Tensor(np.ascontiguousarray(w.T))
        dense = nn.Dense(s["k"], s["n"], has_bias=False)
        dense.weight.set_data(W)
        add("ops.MatMul(tb) pynative", ops.MatMul(transpose_b=True), A, W)
        add("ops.MatMul(tb) graph", Apply(ops.MatMul(transpose_b=True)), A, W, graph=True)
        add("ops.MatMul w^T stored graph", Apply(ops.MatMul()), A, wt, graph=True)
        add("mint.matmul w^T stored", mint.matmul, A, wt)
        add("nn.Dense pynative", dense, A)
        add("nn.Dense graph", dense, A, graph=True)
        if s["m"] != 2048:      # the same product as a 1x1 conv of the (2, C, H, W) map
            hw = int((s["m"] // B) ** .5)
            x4 = Tensor(np.ascontiguousarray(a.reshape(B, hw * hw, s["k"]).transpose(0, 2, 1)).reshape(B, s["k"], hw, hw))
            conv = nn.Conv2d(s["k"], s["n"], 1, has_bias=False)
            conv.weight.set_data(Tensor(w.reshape(s["n"], s["k"], 1, 1)))
            add("Conv2d 1x1 graph (NCHW)", conv, x4, graph=True)
    elif kind == "bmm":
        wt = Tensor(np.ascontiguousarray(w.transpose(0, 2, 1))) if s["tb"] else W
        add("ops.BatchMatMul pynative", ops.BatchMatMul(transpose_b=s["tb"]), A, W)
        add("ops.BatchMatMul graph", Apply(ops.BatchMatMul(transpose_b=s["tb"])), A, W, graph=True)
        add("mint.bmm (b pre-transposed)", mint.bmm, A, wt)
        add("ops.BatchMatMul graph (b pre-transposed)", Apply(ops.BatchMatMul()), A, wt, graph=True)
    elif kind == "conv":
        pad = s["k"] // 2
        conv = nn.Conv2d(s["c"], s["o"], s["k"], pad_mode="pad" if pad else "valid", padding=pad, has_bias=False)
        conv.weight.set_data(W)
        add("nn.Conv2d pynative", conv, A)
        add("nn.Conv2d graph", conv, A, graph=True)
        add("mint conv2d pynative", MintConv(pad), A, W)
        if s["k"] == 1:
            tok = Tensor(np.ascontiguousarray(a.reshape(B, s["c"], -1).transpose(0, 2, 1)).reshape(-1, s["c"]))
            add("Dense on tokens graph", Apply(ops.MatMul(transpose_b=True)), tok, Tensor(w.reshape(s["o"], s["c"])),
                graph=True)
    else:
        gamma, beta = Tensor(np.ones(s["c"], np.float32)), Tensor(np.zeros(s["c"], np.float32))
        add("mint group_norm pynative", GroupNormFn(gamma, beta), A)
        add("mint group_norm graph", GroupNormFn(gamma, beta), A, graph=True)
        add("nn.GroupNorm graph", nn.GroupNorm(32, s["c"], eps=1e-6), A, graph=True)
        add("composed mean/var graph", ComposedGroupNorm(gamma, beta), A, graph=True)
        add("LayerNorm kernel over groups graph", LayerNormGroupNorm(gamma, beta, s["c"] // 32 * s["hw"] ** 2), A,
            graph=True)
    return out


# ------------------------------------------------------------------ torch (second process)
def torch_variants(kind, s, a, w):
    import torch
    import torch.nn.functional as F
    A, W = torch.from_numpy(a), (torch.from_numpy(w) if w is not None else None)
    with torch.no_grad():
        if kind == "gemm":
            return {"torch F.linear": lambda: F.linear(A, W)}
        if kind == "bmm":
            return {"torch bmm": (lambda: torch.bmm(A, W.transpose(1, 2))) if s["tb"] else (lambda: torch.bmm(A, W))}
        if kind == "conv":
            return {"torch conv2d": lambda: F.conv2d(A, W, None, 1, s["k"] // 2)}
        gamma, beta = torch.ones(s["c"]), torch.zeros(s["c"])
        return {"torch group_norm": lambda: F.group_norm(A, 32, gamma, beta, 1e-6)}


def measure(side, names, reps):
    """{case: {variant: [seconds per rep]}}, variants of a case interleaved rep after rep."""
    rng = np.random.default_rng(0)
    result = {}
    for name in names:
        group, kind, s, _ = CASES[name]
        a, w = _data(kind, s, rng)
        variants = dict(numpy_variants(kind, s, a, w))
        if side == "mindspore":
            variants.update(mindspore_variants(kind, s, a, w))
        else:
            import torch
            with torch.no_grad():
                variants.update(torch_variants(kind, s, a, w))
        errors = {}
        with _no_grad(side):
            for v, fn in list(variants.items()):     # warm-up (graph compile, allocator); unsupported ops dropped
                try:
                    fn()
                except (RuntimeError, TypeError, ValueError) as exc:
                    errors[v] = str(exc).strip().splitlines()[0][:160]
                    del variants[v]
            times = {v: [] for v in variants}
            cpu = {v: [] for v in variants}
            for _ in range(reps):
                for v, fn in variants.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn()
                    times[v].append(time.perf_counter() - t0)
                    cpu[v].append(time.process_time() - c0)
        result[name] = dict(times, **{f"{v} (failed)": msg for v, msg in errors.items()},
                            **{f"{v} (cpu s)": c for v, c in cpu.items()})
        print(f"  {side}: {name} done", file=sys.stderr, flush=True)
    return result


def _no_grad(side):
    import contextlib
    if side == "torch":
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()


def table(results, reps):
    lines = [f"GFLOP/s, median of {reps} interleaved reps (x = time of numpy in the same process / time of the "
             "variant: >1 faster than numpy; the min column is the least disturbed rep; GFLOP per CPU-second (process CPU time, all threads) moves less with "
             "the load than wall time, but counts spin-waiting threads too)", "",
             "| case | GFLOP | variant | median ms | min ms | GFLOP/s (median) | GFLOP per CPU-s | vs numpy (median) | "
             "vs numpy (min) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, sides in results.items():
        fl = CASES[name][3]
        for side, times in sides.items():
            np_times = next(v for k, v in times.items() if k.startswith("numpy"))
            ref, ref_min = statistics.median(np_times), min(np_times)
            for v, ts in times.items():
                if v.endswith("(cpu s)"):
                    continue
                cpu = times.get(f"{v} (cpu s)")
                per_cpu = f"{fl / statistics.median(cpu):.0f}" if cpu and statistics.median(cpu) > 0 else "-"
                if isinstance(ts, str):
                    lines.append(f"| {name} | {fl:.2f} | {v}: {ts} | - | - | - | - | - | - |")
                    continue
                med = statistics.median(ts)
                label = v if side == "mindspore" or not v.startswith("numpy") else f"{v} ({side} process)"
                lines.append(f"| {name} | {fl:.2f} | {label} | {1e3 * med:.1f} | {1e3 * min(ts):.1f} | {fl / med:.0f} | "
                             f"{per_cpu} | {ref / med:.2f} | {ref_min / min(ts):.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", nargs="*", default=GROUPS, choices=GROUPS, help="case groups to run")
    parser.add_argument("--match", default="", help="only cases whose name contains this text")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""))
    parser.add_argument("--side", choices=("mindspore", "torch"), default="mindspore", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_ops.json"))
    args = parser.parse_args(argv)
    names = [n for n, (g, *_) in CASES.items() if g in args.groups and args.match in n]
    if args.child:
        print(json.dumps(measure(args.side, names, args.reps)))
        return 0
    sys.path.insert(0, BENCH_DIR)
    from machine import load_average, machine_record
    if args.side == "mindspore":
        import mindspore as ms
        ms.set_device("CPU")
    report = dict(machine=machine_record(args.torch_python), reps=args.reps, load_before=load_average())
    ours = measure("mindspore", names, args.reps)
    report["load_after_mindspore"] = load_average()
    results = {n: {"mindspore": ours[n]} for n in names}
    if args.torch_python:
        cmd = [args.torch_python, os.path.abspath(__file__), "--child", "--side", "torch", "--reps", str(args.reps),
               "--groups", *args.groups, "--match", args.match]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"torch side failed: {proc.stderr[-1500:]}", file=sys.stderr)
        else:
            for n, t in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                results[n]["torch"] = t
    report["load_after"] = load_average()
    report["results"] = results
    print(table(results, args.reps))
    print(f"\nload average before {report['load_before']}, after {report['load_after']}")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
