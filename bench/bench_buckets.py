"""Aspect-ratio buckets on the tiny SD-2.x model: what a new bucket costs (its graphs compile at its first
step) and the time per step with buckets vs square crops, on real photographs (scikit-image's samples
plus rotated copies, kohya caption files).

Each case is one training run in its own interpreter (so compiles are not shared between cases):
`square` (image_size 32, centre crops), buckets (enable_bucket, min 16, max 64, the model's multiple as
step) compiled once for all sizes (`bucket_dynamic_shape True`) or once per bucket (`False`). From
metrics.csv: every step's time and bucket; a bucket's first step holds whatever it compiles. Reported:
first-step cost per bucket = its first step minus the median of the steps of already-seen buckets, their
sum, and the steady time per step of each case. The table goes to stdout and bench/results_buckets.md.

    python bench/bench_buckets.py [--steps 24] [--batch 2]
"""
import argparse
import csv
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
OUT_DIR = os.path.join(BENCH_DIR, "out")
sys.path.insert(0, BENCH_DIR)
import machine  # noqa: E402

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "astronaut.png",
          "retina.jpg", "page.png", "text.png", "camera.png")
BUCKETS = ["--enable_bucket", "True", "--min_bucket_reso", "16", "--max_bucket_reso", "64"]
CASES = {"square": [], "buckets (one graph, dynamic H/W)": BUCKETS + ["--bucket_dynamic_shape", "True"],
         "buckets (a graph per bucket)": BUCKETS + ["--bucket_dynamic_shape", "False"]}


def photo_folder(folder):
    """The photos, each also rotated 90 degrees (portraits), with .txt captions."""
    from PIL import Image
    data = os.path.join(list(importlib.util.find_spec("skimage").submodule_search_locations)[0], "data")
    os.makedirs(folder, exist_ok=True)
    for name in PHOTOS:
        stem = os.path.splitext(name)[0]
        with Image.open(os.path.join(data, name)) as img:
            img.convert("RGB").save(os.path.join(folder, stem + ".png"))
            img.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(os.path.join(folder, stem + "_tall.png"))
        for suffix in ("", "_tall"):
            with open(os.path.join(folder, f"{stem}{suffix}.txt"), "w", encoding="utf-8") as f:
                f.write(f"a photo of {stem}\n")
    return folder


def run_case(name, data, work, steps, batch):
    out = os.path.join(work, name.split()[0] + str(len(name)))
    cmd = [sys.executable, os.path.join(REPO, "train_text_to_image.py"), "--model_config", "configs/tiny-v2-vpred.yaml",
           "--data_path", data, "--output_path", out, "--image_size", "32", "--train_batch_size", str(batch),
           "--max_steps", str(steps), "--epochs", "0", "--show_progress", "False", "--ckpt_save_interval", "100000",
           "--step_mode", "True", "--seed", "1"] + CASES[name]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.csv"), newline="", encoding="utf-8") as f:
        rows = [(r["bucket"], float(r["step_time_s"])) for r in csv.DictReader(f)]
    first, steady = {}, []
    for bucket, seconds in rows:
        if bucket in first:
            steady.append(seconds)
        else:
            first[bucket] = seconds
    median = statistics.median(steady) if steady else float("nan")
    return dict(case=name, steps=len(rows), buckets=len(first), steady_step_s=median, total_s=sum(s for _, s in rows),
                compile_s={b: s - median for b, s in first.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=24, help="training steps per case")
    parser.add_argument("--batch", type=int, default=2, help="train_batch_size")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-buckets-")
    try:
        data = photo_folder(os.path.join(work, "photos"))
        results = [run_case(name, data, work, args.steps, args.batch) for name in CASES]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine.machine_record()
    lines = [f"Tiny SD-2.x (configs/tiny-v2-vpred.yaml), {2 * len(PHOTOS)} photos (scikit-image samples and their "
             f"90-degree rotations), batch {args.batch}, {args.steps} steps. {machine.machine_line(info)}", "",
             "| case | sizes | steady s/step | all steps s | first-step cost per size, s (first step minus steady) |",
             "|---|---|---|---|---|"]
    for r in results:
        costs = ", ".join(f"{b} {s:.2f}" for b, s in r["compile_s"].items())
        lines.append(f"| {r['case']} | {r['buckets']} | {r['steady_step_s']:.3f} | {r['total_s']:.1f} | {costs} |")
    print("\n".join(lines))
    with open(os.path.join(BENCH_DIR, "results_buckets.md"), "w", encoding="utf-8") as f:
        f.write("# bench/bench_buckets.py\n\n" + "\n".join(lines) + "\n")
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "bench_buckets.json"), "w", encoding="utf-8") as f:
        json.dump(dict(machine=info, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
