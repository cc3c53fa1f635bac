"""Tiny UNet training step (bench_train's tiny case) with MindSpore's CPU kernels on 1 thread vs the default.

Small kernels (the tiny UNet's are 0.1-1 MFLOP) pay a thread-pool barrier per launch; on 2 cores that
are shared with other work, a descheduled worker stalls every op. Each setting runs in its own process
(``mindspore.device_context.cpu.op_tuning.threads_num`` is set once, before the first kernel), and the
processes alternate setting by setting, ``--rounds`` times; medians of each process's median step time.

    python bench/studies/bench_threads.py [--rounds 3] [--threads 0 1]     # 0 = MindSpore's default
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

STUDY_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(STUDY_DIR)
sys.path.insert(0, BENCH_DIR)  # bench_train, machine


def worker(threads, steps, warmup, case):
    import mindspore as ms
    if threads:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    import bench_train
    return bench_train.run_mindspore(bench_train.CASES[case], steps, warmup)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--case", default="tiny", choices=["tiny", "sd2"])
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_threads.json"))
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.case)), flush=True)
        return 0
    from machine import load_average
    runs = {n: [] for n in args.threads}
    loads = [load_average()]
    for _ in range(args.rounds):
        for n in args.threads:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--case", args.case]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"))
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                raise SystemExit(f"threads {n} failed: {proc.stderr[-1500:]}")
            runs[n].append(json.loads(lines[-1])["ms_per_step"])
            loads.append(load_average())
    print(f"{args.case} training step (ms/step, median of {args.steps} steps per process, {args.rounds} "
          f"alternating processes per setting); load average {loads[0]} -> {loads[-1]}")
    base = statistics.median(runs[args.threads[0]])
    for n, ts in runs.items():
        med = statistics.median(ts)
        print(f"threads_num {n or 'default'}: median {med:.1f} ms (runs {', '.join(f'{t:.0f}' for t in ts)}); "
              f"speed-up vs {args.threads[0] or 'default'}: {base / med:.2f}")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(dict(runs=runs, loads=loads, case=args.case), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
