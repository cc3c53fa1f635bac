"""Print the results tables of README.md and docs/results.md, built from one run_all run (bench/out/run_all.json).

run_all.py records, for every benchmark it ran, the JSON file that benchmark wrote and its sha256; this
script refuses a JSON file whose hash differs (a benchmark rerun alone afterwards), so every row of the
tables and the machine line above them come from the same run.

It prints markdown to stdout (a machine line, the speed table, the `--compile_cache` table) and writes no
file: README.md ("Results") and docs/results.md take the rows as printed, with the machine and date in
each table's header line.

    python bench/readme_table.py [--run bench/out/run_all.json]
"""
import argparse
import hashlib
import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from machine import machine_line  # noqa: E402

HEADER = "| benchmark | ours | diffusers-PyTorch | ratio (ours / torch time) |\n|---|---|---|---|"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def _num(x, fmt, unit=""):
    return f"{x:{fmt}}{unit}" if isinstance(x, (int, float)) else "-"


def rows_models(data, note):
    ms, pt = data.get("mindspore", {}), data.get("pytorch", {})
    n = len(ms.get("times_s", []))
    label = f"SD 2.x UNet fp32 forward, 64x64 latents, batch 2 (`bench_models.py`, {ms.get('mode', 'graph')}, median of {n})"
    a, b = ms.get("median_s"), pt.get("median_s")
    return [f"| {label}{note} | {_num(a, '.2f', ' s')} | {_num(b, '.2f', ' s')} | {_ratio(a, b)} |"]


def rows_txt2img(data, note):
    labels = {"sd2": "txt2img SD 2.x size, 512 px, DPM-Solver++ 2M 15 steps, scale 9 (`bench_txt2img.py`, best of "
                     "{n})",
              "tiny": "txt2img tiny random SD2-style model, 64 px, same sampler (per-step overhead, best of {n})"}
    out = []
    for row in data:
        ours, ref = row.get("ours", {}), row.get("diffusers", {})
        n = len(ours.get("all_s", []))
        label = labels.get(row["setting"], row["setting"]).format(n=n)
        a, b = ours.get("s_per_image"), ref.get("s_per_image")
        out.append(f"| {label}{note} | {_num(a, '.3f', ' s/img')} | {_num(b, '.3f', ' s/img')} | {_ratio(a, b)} |")
    return out


def rows_train(data, note):
    labels = {"sd2": "SD 2.x UNet training step (fwd+bwd+AdamW), 256 px, batch 1 (`bench_train.py --cases sd2`)",
              "tiny": "tiny UNet training step, batch 4, 32 px (`bench_train.py --cases tiny`)"}
    by_case = {}
    for r in data:
        by_case.setdefault(r["case"], {})[r["side"]] = r
    out = []
    for case, sides in by_case.items():
        ours, ref = sides.get("mindspore", {}), sides.get("torch", {})
        a, b = ours.get("ms_per_step"), ref.get("ms_per_step")

        def cell(r, t):
            return (f"{t:.0f} ms (peak {r['peak_rss_mb'] / 1024:.1f} GB)" if t else r.get("error", "-")[:60])
        out.append(f"| {labels.get(case, case)}{note} | {cell(ours, a)} | {cell(ref, b) if ref else '-'} | "
                   f"{_ratio(a, b)} |")
    return out


def rows_eval(data, note):
    out = []
    for key, label in (("fid_img_per_s", "FID Inception features (`bench_eval.py`), img/s"),
                       ("clip_img_per_s", f"CLIP {data.get('clip_preset', '')} score (`bench_eval.py`), img/s")):
        a, b = data.get(f"ours_{key}"), data.get(f"torch_{key}")
        # throughput: the time ratio is reference / ours
        out.append(f"| {label}{note} | {_num(a, '.2f')} | {_num(b, '.2f')} | {_ratio(b, a)} |")
    return out


def rows_compile_cache(data, note):
    labels = {"txt2img_tiny": "txt2img tiny demo model, 32 px, 15 steps: time to first image",
              "txt2img_sd2": "txt2img SD 2.x size (random weights), 256 px, 5 steps: time to first image",
              "train_tiny": "train_text_to_image tiny, 32 px, batch 4: first step",
              "train_sd2": "train_text_to_image SD 2.x size (random init), 256 px, batch 1: first step"}
    out = []
    for r in data["rows"]:
        out.append(f"| {labels.get(r['case'], r['case'])} (median of {r['reps']}){note} | {r['cold_first']:.2f} s | "
                   f"{r['warm_first']:.2f} s | {r['warm_steady']:.2f} s | {100 * r['warm_compile_share']:.0f}% |")
    return out


CACHE_HEADER = ("| `--compile_cache` (`bench_compile_cache.py`) | first run (compiles) | identical second run "
                "(cache) | a later image / step | compilation left in the second run's first |\n|---|---|---|---|---|")
# benchmarks whose rows form a table of their own (other columns than ours / diffusers / ratio)
OWN_TABLES = {"bench_compile_cache": (CACHE_HEADER, rows_compile_cache)}
ROWS = {"bench_models": rows_models, "bench_txt2img": rows_txt2img, "bench_train": rows_train,
        "bench_eval": rows_eval}


def build_table(run):
    """Markdown: machine line, then one row per measured case of the benchmarks in ``run``."""
    lines = [f"Measured by one `bench/run_all.py` run{' (--quick)' if run.get('quick') else ''} on: "
             f"{machine_line(run['machine'])}.", "", HEADER]
    own = []
    for bench in run["benchmarks"]:
        name, out = bench["name"], bench.get("json")
        fn = ROWS.get(name) or OWN_TABLES.get(name, (None, None))[1]
        if fn is None or not out:
            continue
        if not os.path.isfile(out["path"]) or sha256(out["path"]) != out["sha256"]:
            raise SystemExit(f"{out['path']} is not the file run_all recorded (rerun bench/run_all.py)")
        with open(out["path"], encoding="utf-8") as f:
            data = json.load(f)
        before, after = bench["load_before"][0], bench["load_after"][0]
        rows = fn(data, f" [load {before}->{after}]")
        if name in OWN_TABLES:
            own += ["", OWN_TABLES[name][0]] + rows
        else:
            lines += rows
    return "\n".join(lines + own)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=os.path.join(BENCH_DIR, "out", "run_all.json"),
                        help="run record written by bench/run_all.py")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.run):
        print(f"error: {args.run} not found (run bench/run_all.py first)", file=sys.stderr)
        return 2
    with open(args.run, encoding="utf-8") as f:
        print(build_table(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
