"""The compile cache (``--compile_cache DIR``) before and after: the same CLI run twice, first with an
empty cache folder (it compiles, and fills the folder), then again (it loads the compiled graphs).

Cases (each a real CLI run in its own process, on random or shipped weights):
  txt2img_tiny  text_to_image.py, the shipped tiny demo model, 32 px, 15 DPM-Solver++ steps, 3 images
  txt2img_sd2   text_to_image.py, SD 2.x-base size (configs/v2-inference.yaml, random weights saved once
                to a temporary checkpoint), 256 px, 5 steps, 2 images
  train_tiny    train_text_to_image.py, configs/tiny-v2.yaml from random init, 32 px, batch 4, 6 steps
  train_sd2     train_text_to_image.py, SD 2.x size (configs/v2-train.yaml, random init), 256 px, batch 1, 3 steps
For each: time to the first image / first step (what compilation delays), the steady time of a later
image / step, the whole process, and the share of the warm run's time to first image that is still
compilation: (first - steady) / first. Medians over --reps cold/warm pairs (--sd2_reps for SD 2.x).

    python bench/bench_compile_cache.py [--cases txt2img_tiny train_tiny] [--reps 3] [--sd2_reps 1]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
CASES = ("txt2img_tiny", "txt2img_sd2", "train_tiny", "train_sd2")
FIRST_IMAGE = re.compile(r"time to first image ([0-9.]+) s .*?([0-9.eE+-]+) images/s over ([0-9.]+) s")
STEP = re.compile(r"\(step \d+/\d+, lr [^,]+, ([0-9.]+) s/step")


def make_sd2_checkpoint(folder):
    """Random SD 2.x-base weights (no hub here) saved as a MindSpore checkpoint, built in a child
    process so this one never imports MindSpore."""
    path = os.path.join(folder, "sd2_random.ckpt")
    code = ("import sys, mindspore as ms; sys.path.insert(0, %r)\n"
            "from ldm.models.latent_diffusion import build_model\nfrom ldm.util import load_config\n"
            "ms.set_device('CPU')\nmodel = build_model(load_config(%r))\n"
            "ms.save_checkpoint(model, %r)\n") % (REPO, os.path.join(REPO, "configs", "v2-inference.yaml"), path)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)
    return path


def make_images(folder, count, size):
    """``count`` captioned images (img_txt.csv) for the training cases: the synthetic-shapes train split."""
    sys.path.insert(0, REPO)
    from datasets.synthetic_shapes import make_dataset
    make_dataset(folder, num_train=count, num_test=1, size=size, seed=0)
    return os.path.join(folder, "train")


def command(case, work, cache, out):
    if case.startswith("txt2img"):
        if case == "txt2img_tiny":
            model = ["--config", "configs/tiny-shapes-v2.yaml", "--ckpt_path", "models/tiny_shapes_base.ckpt",
                     "--W", "32", "--H", "32", "--sampling_steps", "15", "--n_iter", "3"]
        else:
            model = ["--config", "configs/v2-inference.yaml", "--ckpt_path", work["sd2_ckpt"], "--W", "256",
                     "--H", "256", "--sampling_steps", "5", "--n_iter", "2"]
        return ["text_to_image.py"] + model + ["--n_samples", "1", "--scale", "9", "--seed", "42",
                                               "--prompt", "a red circle", "--output_path", out,
                                               "--compile_cache", cache]
    if case == "train_tiny":
        model = ["--model_config", "configs/tiny-v2.yaml", "--data_path", work["data32"], "--image_size", "32",
                 "--train_batch_size", "4", "--max_steps", "6"]
    else:
        model = ["--model_config", "configs/v2-train.yaml", "--data_path", work["data256"], "--image_size", "256",
                 "--train_batch_size", "1", "--max_steps", "3"]
    return ["train_text_to_image.py"] + model + ["--pretrained_model_path", "", "--step_mode", "True",
                                                 "--ckpt_save_interval", "1000", "--callback_size", "1",
                                                 "--show_progress", "False", "--seed", "1", "--output_path", out,
                                                 "--compile_cache", cache]


def run_once(case, work, cache):
    """One CLI run -> dict(first, steady, process seconds)."""
    out = tempfile.mkdtemp(prefix="cc_out_", dir=work["root"])
    cmd = [sys.executable] + command(case, work, cache, out)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"))
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"{case}: exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    if case.startswith("txt2img"):
        m = FIRST_IMAGE.search(proc.stderr)
        first, rate, seconds = float(m.group(1)), float(m.group(2)), float(m.group(3))
        images = round(rate * seconds)
        steady = (seconds - first) / max(images - 1, 1)
    else:
        steps = [float(t) for t in STEP.findall(proc.stderr)]
        first, steady = steps[0], statistics.median(steps[1:])
    return dict(first=first, steady=steady, process=wall)


def measure(case, work, reps):
    cold, warm = [], []
    for _ in range(reps):
        cache = tempfile.mkdtemp(prefix="cc_cache_", dir=work["root"])
        cold.append(run_once(case, work, cache))
        warm.append(run_once(case, work, cache))
        shutil.rmtree(cache, ignore_errors=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)
    row = dict(case=case, reps=reps, cold=cold, warm=warm)
    for side, runs in (("cold", cold), ("warm", warm)):
        row[side + "_first"], row[side + "_steady"], row[side + "_process"] = (med(runs, k) for k in
                                                                            ("first", "steady", "process"))
    row["warm_compile_share"] = max(0.0, row["warm_first"] - row["warm_steady"]) / row["warm_first"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES, help="which runs to measure")
    parser.add_argument("--reps", type=int, default=3, help="cold/warm pairs per tiny case (median reported)")
    parser.add_argument("--sd2_reps", type=int, default=1, help="cold/warm pairs per SD 2.x-size case")
    parser.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_compile_cache.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, BENCH_DIR)
    from machine import load_average
    root = tempfile.mkdtemp(prefix="bench_compile_cache_")
    work = dict(root=root)
    try:
        if "txt2img_sd2" in args.cases:
            work["sd2_ckpt"] = make_sd2_checkpoint(root)
        if "train_tiny" in args.cases:
            work["data32"] = make_images(os.path.join(root, "data32"), 8, 32)
        if "train_sd2" in args.cases:
            work["data256"] = make_images(os.path.join(root, "data256"), 4, 256)
        load_before = load_average()
        rows = [measure(c, work, args.sd2_reps if c.endswith("sd2") else args.reps) for c in args.cases]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"compile cache: the same CLI run with an empty cache folder (cold), then again (warm); medians; "
          f"load average {load_before} -> {load_average()}")
    print("case           reps  first cold s  first warm s  steady s  process cold s  process warm s  "
          "compile share of warm first")
    for r in rows:
        print(f"{r['case']:<14} {r['reps']:>4}  {r['cold_first']:>12.2f}  {r['warm_first']:>12.2f}  "
              f"{r['warm_steady']:>8.2f}  {r['cold_process']:>14.1f}  {r['warm_process']:>14.1f}  "
              f"{100 * r['warm_compile_share']:>6.1f}%")
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(dict(rows=rows, load_before=load_before), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
