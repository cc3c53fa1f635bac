"""One fp32 forward of the full-size SD 2.x UNet (865 M parameters) at 64x64 latents, batch 2, on this CPU:
ours (MindSpore, compiled with ``ms.jit``) next to diffusers' UNet2DConditionModel with the same config.

Both sides get the same inputs (numpy, seed 0) and random weights (no hub here; timing does not depend
on the values). ``--mode graph`` (default) compiles our forward with ``ms.jit`` (on the bound ``construct``,
as the pipeline does); ``--mode pynative`` runs it op by op (lower peak memory: CPU graph mode keeps more
intermediates alive).
Each side runs in its own process (each model holds ~3.5 GB), one warm-up call
(MindSpore compiles the graph there) then ``--repeats`` timed calls; we report the median.
The torch side runs this file under the interpreter from --torch_python / $TORCH_PYTHON.

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/bench_models.py --torch_python /tmp/msd-fixture-env/bin/python
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
CONFIG = os.path.join(REPO, "configs", "v2-inference.yaml")
BATCH, LATENT, CONTEXT_LEN, CONTEXT_DIM = 2, 64, 77, 1024

# the same network in diffusers' terms (stabilityai/stable-diffusion-2 UNet config)
SD2_UNET_DIFFUSERS = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                          block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                          cross_attention_dim=1024, use_linear_projection=True, upcast_attention=False,
                          down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                          up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def inputs():
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 4, LATENT, LATENT)).astype(np.float32)
    t = np.array([999, 500], dtype=np.int32)
    context = rng.standard_normal((BATCH, CONTEXT_LEN, CONTEXT_DIM)).astype(np.float32)
    return x, t, context


def timed(call, repeats):
    t0 = time.perf_counter()
    call()
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return dict(warmup_s=warmup, times_s=times, median_s=statistics.median(times))


def ours(repeats, mode, attention="auto"):
    sys.path.insert(0, REPO)
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    from ldm.models.unet import UNetModel
    from ldm.util import load_config
    params = load_config(CONFIG)["model"]["params"]["unet_config"]["params"]
    t0 = time.perf_counter()
    unet = UNetModel(**dict(params, attention=attention))
    unet.set_train(False)
    build = time.perf_counter() - t0
    x, t, c = (ms.Tensor(a) for a in inputs())
    # compile the bound construct, as ldm.pipeline does: a Cell passed to a jit function as an *argument*
    # makes every call re-bind its 866 M parameters as graph inputs (measured: 26.7 s/forward vs 6.8 s)
    forward = ms.jit(unet.construct) if mode == "graph" else unet
    result = timed(lambda: forward(x, t, c).asnumpy(), repeats)
    n_params = sum(int(p.size) for p in unet.get_parameters())
    return dict(result, side="mindspore", mode=mode, version=ms.__version__, build_s=build, params=n_params,
                attention=attention)


def reference(repeats):
    import torch
    from diffusers import UNet2DConditionModel
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD2_UNET_DIFFUSERS).eval()
    build = time.perf_counter() - t0
    x, t, c = (torch.from_numpy(a) for a in inputs())
    t = t.long()

    def call():
        with torch.no_grad():
            unet(x, t, c).sample.numpy()

    result = timed(call, repeats)
    n_params = sum(p.numel() for p in unet.parameters())
    return dict(result, side="pytorch", version=torch.__version__, build_s=build, params=n_params,
                threads=torch.get_num_threads())


def run_side(python, side, repeats, mode, attention="auto"):
    cmd = [python, os.path.abspath(__file__), "--side", side, "--repeats", str(repeats), "--mode", mode,
           "--attention", attention]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                        help="python with torch + diffusers for the reference side (skipped when empty)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph", help="how our side runs")
    parser.add_argument("--attention", nargs="+", default=["auto"], choices=("auto", "standard", "chunked"),
                        help="our attention mode(s), each timed in its own process (the first is the row compared "
                             "with diffusers; auto at 64x64, batch 2 cuts the top level's 671 MB of scores in 2 chunks)")
    parser.add_argument("--side", choices=("mindspore", "pytorch"), help=argparse.SUPPRESS)
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_models.json"))
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(ours(args.repeats, args.mode, args.attention[0]) if args.side == "mindspore"
                         else reference(args.repeats)))
        return 0

    rows = {"setting": f"SD 2.x UNet fp32 forward, latents {BATCH}x4x{LATENT}x{LATENT}, context {CONTEXT_LEN}x"
                       f"{CONTEXT_DIM}", "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    rows["mindspore_by_attention"] = {}
    for attention in args.attention:
        r = rows["mindspore_by_attention"][attention] = run_side(sys.executable, "mindspore", args.repeats, args.mode,
                                                                 attention)
        print(f"MindSpore {r['version']} ({args.mode}, attention {attention}): {r['median_s']:.2f} s/forward "
              f"(compile+first call {r['warmup_s']:.1f} s, {r['params'] / 1e6:.0f} M params)")
    rows["mindspore"] = rows["mindspore_by_attention"][args.attention[0]]
    for attention, r in list(rows["mindspore_by_attention"].items())[1:]:
        print(f"attention {args.attention[0]} / {attention}: {rows['mindspore']['median_s'] / r['median_s']:.2f}")
    if args.torch_python:
        rows["pytorch"] = run_side(args.torch_python, "pytorch", args.repeats, args.mode)
        rows["ratio_ours_over_torch"] = rows["mindspore"]["median_s"] / rows["pytorch"]["median_s"]
        print(f"PyTorch {rows['pytorch']['version']} diffusers: {rows['pytorch']['median_s']:.2f} s/forward "
              f"({rows['pytorch']['params'] / 1e6:.0f} M params, {rows['pytorch']['threads']} threads)")
        print(f"ratio MindSpore / PyTorch: {rows['ratio_ours_over_torch']:.2f} (target <= 1.0)")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
