"""Training-step speed and memory: our MindSpore UNet step vs diffusers-PyTorch doing the same step.

One step = UNet forward on noisy latents + text context, MSE to a target, backward, AdamW update
(the part of fine-tuning that does not depend on the frozen VAE / text encoder). Cases:
  tiny: configs/tiny-v2-vpred.yaml's UNet, 32 px images (16x16 latents), batch 4
  sd2:  the full SD 2.x UNet (configs/v2-vpred-inference.yaml, 866 M params) at 256 px (32x32 latents), batch 1
  sd2_768: the same at 768 px (96x96 latents) with recompute and chunked attention (diffusers: gradient
        checkpointing, SDPA attention)
Each side runs in its own subprocess (so peak RSS is per side); ours under ms.jit, torch in eager
fp32 with torch.optim.AdamW. Times are medians after warm-up (the first MindSpore step compiles).

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/bench_train.py --torch_python /tmp/msd-fixture-env/bin/python --cases tiny sd2
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "tiny": dict(config="configs/tiny-v2-vpred.yaml", latent=16, batch=4),
    "sd2": dict(config="configs/v2-vpred-inference.yaml", latent=32, batch=1),
    # 768 px: recompute (gradient checkpointing) and chunked attention; diffusers the same with
    # enable_gradient_checkpointing() and its default (SDPA) attention
    "sd2_768": dict(config="configs/v2-vpred-inference.yaml", latent=96, batch=1, recompute=True,
                    attention="chunked"),
    # the same step op by op (PyNative): MindSpore's graph-mode memory pool keeps what the compiled step
    # ever held (the graph step was OOM-killed at 24 GB here), PyNative frees tensors as they die
    "sd2_768_pynative": dict(config="configs/v2-vpred-inference.yaml", latent=96, batch=1, recompute=True,
                             attention="chunked", jit=False),
}


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb():
    """Resident memory now (VmRSS): after the steps it shows what training holds, while the peak also
    counts transients such as MindSpore's graph compilation."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


def _unet_params(config_path):
    import yaml
    with open(os.path.join(REPO, config_path), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    return cfg["model"]["params"]["unet_config"]["params"]


def _inputs(p, case, rng):
    import numpy as np
    n, side = case["batch"], case["latent"]
    return (rng.standard_normal((n, p["in_channels"], side, side)).astype(np.float32),
            rng.integers(0, 1000, n).astype(np.int64),
            rng.standard_normal((n, 77, p["context_dim"])).astype(np.float32),
            rng.standard_normal((n, p["out_channels"], side, side)).astype(np.float32))


# ---------------------------------------------------------------- MindSpore side
def run_mindspore(case, steps, warmup):
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, ops
    sys.path.insert(0, REPO)
    from ldm.train.optim import AdamW, backward_order
    from ldm.util import instantiate_from_config
    ms.set_device("CPU")
    p = _unet_params(case["config"])
    import yaml
    with open(os.path.join(REPO, case["config"]), encoding="utf-8") as f:
        unet_cfg = yaml.safe_load(f)["model"]["params"]["unet_config"]
    unet_cfg["params"].update(use_checkpoint=bool(case.get("recompute")), attention=case.get("attention", "auto"))
    unet = instantiate_from_config(unet_cfg)
    params = backward_order(unet.trainable_params())     # as ldm.train does (gradients freed as they are used)
    opt = AdamW(params, (0.9, 0.999), 1e-8, 1e-2)

    def loss_fn(x, t, c, target):
        return ops.square(unet(x, t, c) - target).mean()

    grad_fn = ms.value_and_grad(loss_fn, None, params)

    def step(x, t, c, target, lr):
        loss, grads = grad_fn(x, t, c, target)
        opt(grads, lr)
        return loss

    if case.get("jit", True):
        step = ms.jit(step)
    x, t, c, target = _inputs(p, case, np.random.default_rng(0))
    args = (Tensor(x), Tensor(t.astype(np.int32)), Tensor(c), Tensor(target), Tensor(np.float32(1e-5)))
    times, before = [], _peak_rss_mb()
    start = time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step(*args).asnumpy()
        if i == 0:
            first = time.perf_counter() - start
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return dict(side="mindspore", ms_per_step=1000 * statistics.median(times), first_step_s=first,
                params=sum(int(np.prod(q.shape)) for q in params), peak_rss_mb=_peak_rss_mb(),
                peak_rss_before_steps_mb=before, rss_end_mb=_rss_mb())


# ---------------------------------------------------------------- PyTorch side
def _diffusers_unet(p):
    from diffusers import UNet2DConditionModel
    mult = p["channel_mult"]
    chans = [p["model_channels"] * m for m in mult]
    attn_levels = [2 ** i in p["attention_resolutions"] for i in range(len(mult))]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn_levels][::-1]
    head_ch = p.get("num_head_channels", -1)
    heads = [c // head_ch for c in chans] if head_ch and head_ch > 0 else [p["num_heads"]] * len(chans)
    return UNet2DConditionModel(
        sample_size=32, in_channels=p["in_channels"], out_channels=p["out_channels"], down_block_types=tuple(down),
        up_block_types=tuple(up), block_out_channels=tuple(chans), layers_per_block=p["num_res_blocks"],
        cross_attention_dim=p["context_dim"], attention_head_dim=heads,
        use_linear_projection=p.get("use_linear_in_transformer", False), upcast_attention=p.get("upcast_attention", False))


def run_torch(case, steps, warmup):
    import numpy as np
    import torch
    torch.manual_seed(0)
    p = _unet_params(case["config"])
    unet = _diffusers_unet(p)
    if case.get("recompute"):
        unet.enable_gradient_checkpointing()
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)
    x, t, c, target = (torch.from_numpy(a) for a in _inputs(p, case, np.random.default_rng(0)))
    times, before = [], _peak_rss_mb()
    start = time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=c).sample, target)
        loss.backward()
        opt.step()
        if i == 0:
            first = time.perf_counter() - start
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return dict(side="torch", ms_per_step=1000 * statistics.median(times), first_step_s=first,
                params=sum(q.numel() for q in unet.parameters()), peak_rss_mb=_peak_rss_mb(),
                peak_rss_before_steps_mb=before, rss_end_mb=_rss_mb(), threads=torch.get_num_threads())


# ---------------------------------------------------------------- driver
def _worker(side, name, steps, warmup, python, timeout):
    cmd = [python, os.path.abspath(__file__), "--worker", side, "--cases", name,
           "--steps", str(steps), "--warmup", str(warmup)]
    env = dict(os.environ, GLOG_v="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return dict(side=side, error=f"timed out after {timeout} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return dict(side=side, error=(proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["tiny", "sd2"], choices=sorted(CASES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, allocator)")
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                        help="python with torch+diffusers (env TORCH_PYTHON); empty: MindSpore side only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per side and case")
    parser.add_argument("--json_out", default=os.path.join(REPO, "bench", "out", "bench_train.json"))
    parser.add_argument("--worker", choices=["mindspore", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run = run_mindspore if args.worker == "mindspore" else run_torch
        print(json.dumps(run(CASES[args.cases[0]], args.steps, args.warmup)), flush=True)
        return 0
    results = []
    print(f"training step (UNet fwd+bwd+AdamW), fp32 CPU, {os.cpu_count()} cores; median of {args.steps} steps")
    print(f"{'case':6} {'side':10} {'ms/step':>10} {'first step s':>13} {'peak RSS MB':>12} {'RSS after MB':>12} "
          f"{'params':>12}")
    for name in args.cases:
        sides = [("mindspore", sys.executable)] + ([("torch", args.torch_python)] if args.torch_python else [])
        row = {}
        for side, python in sides:
            r = _worker(side, name, args.steps, args.warmup, python, args.timeout)
            r["case"] = name
            results.append(r)
            row[side] = r
            if "error" in r:
                print(f"{name:6} {side:10} error: {r['error']}")
            else:
                print(f"{name:6} {side:10} {r['ms_per_step']:10.1f} {r['first_step_s']:13.1f} "
                      f"{r['peak_rss_mb']:12.0f} {r['rss_end_mb']:12.0f} {r['params']:12d}")
        if all(s in row and "error" not in row[s] for s in ("mindspore", "torch")):
            ratio = row["mindspore"]["ms_per_step"] / row["torch"]["ms_per_step"]
            mem = row["mindspore"]["peak_rss_mb"] / row["torch"]["peak_rss_mb"]
            print(f"{name:6} ratio      time ours/torch = {ratio:.2f}x, peak memory ours/torch = {mem:.2f}x")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
