"""Run every benchmark in bench/ and collect what each printed into bench/results.md.

Each benchmark prints its own table (ours next to diffusers-PyTorch where a torch interpreter is
given) and writes JSON under bench/out/; this script only runs them in turn, with a time limit each,
and records the output, the command and the machine, so the README's results can be regenerated.

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/run_all.py --torch_python /tmp/msd-fixture-env/bin/python
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
BENCHMARKS = ("bench_models", "bench_samplers", "bench_txt2img", "bench_train", "bench_eval")
# --quick: only the small cases (minutes instead of about an hour; no full-size SD model is built)
QUICK_ARGS = {"bench_samplers": [], "bench_txt2img": ["--only", "tiny"], "bench_train": ["--cases", "tiny"],
              "bench_eval": ["--n_images", "16"]}


def run_one(name, torch_python, timeout, extra):
    script = os.path.join(BENCH_DIR, name + ".py")
    if not os.path.isfile(script):
        return f"(missing: {script})", None
    cmd = [sys.executable, script] + extra
    env = dict(os.environ)
    if torch_python:
        env["TORCH_PYTHON"] = torch_python
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"(timed out after {timeout} s)", None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        out += f"\n(exit code {proc.returncode})\n" + proc.stderr.strip()[-2000:]
    return out, proc.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                        help="python with torch + diffusers for the reference side (empty: ours only)")
    parser.add_argument("--only", nargs="*", default=list(BENCHMARKS), choices=BENCHMARKS,
                        help="run only these benchmarks")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per benchmark")
    parser.add_argument("--quick", action="store_true",
                        help="small cases only (tiny txt2img and training step, samplers, eval); skips the "
                             "full-size SD 2.x UNet")
    parser.add_argument("--output", default=os.path.join(BENCH_DIR, "results.md"),
                        help="markdown file to write")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# Benchmark results\n\n{stamp}; {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; reference python: {args.torch_python or 'none'}\n"]
    failed = 0
    for name in args.only:
        if args.quick and name not in QUICK_ARGS:
            continue
        extra = QUICK_ARGS[name] if args.quick else []
        print(f"running {name} ...", flush=True)
        out, code = run_one(name, args.torch_python, args.timeout, extra)
        failed += code not in (0,)
        command = " ".join([f"python bench/{name}.py"] + extra)
        parts.append(f"## {name}\n\n`{command}`\n\n```\n{out}\n```\n")
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
