"""Run every benchmark in bench/ and collect what each printed into bench/results.md.

Each benchmark prints its own table (ours next to diffusers-PyTorch where a torch interpreter is
given) and writes JSON under bench/out/; this script only runs them in turn, with a time limit each,
and records the output, the command and the machine (bench/machine.py: CPU model and flags, cores,
memory, load average before and after each benchmark, versions, date) into bench/results.md and
bench/out/run_all.json. `bench/readme_table.py` (or `--readme_table` here) turns that one run's record
into the results table of README.md and docs/results.md, so every row and the machine line come from the same run.

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env   # once: the torch reference side
    python bench/run_all.py --torch_python /tmp/msd-fixture-env/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
OUT_DIR = os.path.join(BENCH_DIR, "out")
sys.path.insert(0, BENCH_DIR)
import machine  # noqa: E402
import readme_table  # noqa: E402

BENCHMARKS = ("bench_models", "bench_samplers", "bench_txt2img", "bench_train", "bench_compile_cache", "bench_eval",
              "bench_ops", "bench_memory", "bench_buckets")
# --quick: only the small cases (minutes instead of about an hour; no full-size SD model is built)
QUICK_ARGS = {"bench_samplers": [], "bench_txt2img": ["--only", "tiny"], "bench_train": ["--cases", "tiny"],
              "bench_compile_cache": ["--cases", "txt2img_tiny", "train_tiny"],
              "bench_eval": ["--n_images", "16"], "bench_ops": ["--groups", "ref", "norm", "--reps", "3"],
              "bench_buckets": ["--steps", "12"]}


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
    parser.add_argument("--record", default=os.path.join(OUT_DIR, "run_all.json"),
                        help="JSON record of this run (machine, per-benchmark load and output file hashes)")
    parser.add_argument("--readme_table", action="store_true",
                        help="run nothing: print the results table (README.md, docs/results.md) from the last run's --record")
    args = parser.parse_args(argv)
    if args.readme_table:
        return readme_table.main(["--run", args.record])
    rec = machine.machine_record(args.torch_python)
    run = dict(machine=rec, quick=args.quick, benchmarks=[])
    parts = [f"# Benchmark results\n\nMachine: {machine.machine_line(rec)}\n",
             f"Reference python: {args.torch_python or 'none'}; Python {rec['python']}. "
             "Other work may share this machine: the load average before and after each benchmark is below; "
             "compare ratios measured in one run, not absolute times across runs.\n",
             "```json\n" + json.dumps(rec, indent=1) + "\n```\n"]
    failed = 0
    for name in args.only:
        if args.quick and name not in QUICK_ARGS:
            continue
        extra = QUICK_ARGS[name] if args.quick else []
        print(f"running {name} ...", flush=True)
        load_before, start = machine.load_average(), time.time()
        out, code = run_one(name, args.torch_python, args.timeout, extra)
        load_after, seconds = machine.load_average(), time.time() - start
        failed += code not in (0,)
        command = " ".join([f"python bench/{name}.py"] + extra)
        bench = dict(name=name, command=command, exit_code=code, seconds=round(seconds, 1),
                     load_before=load_before, load_after=load_after, json=None)
        path = os.path.join(OUT_DIR, name + ".json")
        if os.path.isfile(path) and os.path.getmtime(path) >= start:   # written by this run, not an older one
            bench["json"] = dict(path=path, sha256=readme_table.sha256(path))
        run["benchmarks"].append(bench)
        parts.append(f"## {name}\n\n`{command}` ({seconds:.0f} s; load average before "
                     f"{'/'.join(map(str, load_before))}, after {'/'.join(map(str, load_after))})\n\n"
                     f"```\n{out}\n```\n")
    os.makedirs(os.path.dirname(args.record), exist_ok=True)
    _write(args.record, json.dumps(run, indent=1))
    parts.append("## README table (`python bench/readme_table.py`)\n\n" + readme_table.build_table(run) + "\n")
    _write(args.output, "\n".join(parts))
    print(f"wrote {args.output} and {args.record}")
    return 1 if failed else 0


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
