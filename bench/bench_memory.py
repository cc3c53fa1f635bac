"""Memory at real size: full-size SD 2.1-v (random weights, bench/random_sd.py) on this machine, ours next to
diffusers-PyTorch where both run the same job. Every case is its own process; its peak resident memory is
the kernel's ``ru_maxrss`` for that process (os.wait4), its time the wall clock.

Cases (``--cases``, default all):
  t2i_768x4        text_to_image.py 768 x 768, --n_samples 4, guidance (scale 9), 1 DPM-Solver step,
                   attention auto (the memory plan decides the micro-batches); diffusers the same job
                   (StableDiffusionPipeline, num_images_per_prompt 4, its default SDPA attention)
  t2i_768x1_std    the same with --n_samples 1 and --attention standard (the picture of seed 1) ...
  t2i_768x1_chk    ... and --attention chunked: the two PNGs are compared, and their UNet step times
  train_256        bench_train.py --cases sd2 (UNet fwd+bwd+AdamW, 256 px, batch 1), both sides
  train_768        bench_train.py --cases sd2_768_pynative (768 px, batch 1, recompute, chunked attention, the step
                   run op by op: compiled, MindSpore's CPU memory pool kept more than this machine's 24 GB), ours
  recipe_flash     MindONE's train_config_lora_v2_vpred.yaml unchanged but for paths, batch 1, 1 step and MindONE's
                   --mode 1 (PyNative: compiled, both settings were OOM-killed at 23.1 GiB on this 24 GB machine),
                   with its enable_flash_attention True (here: chunked attention) and then False (standard)

    bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env      # once: the diffusers side
    python bench/bench_memory.py --torch_python /tmp/msd-fixture-env/bin/python
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
GIB = 2 ** 30
CASES = ("t2i_768x4", "t2i_768x1_std", "t2i_768x1_chk", "train_256", "train_768", "recipe_flash")
PROMPT = "a photograph of an astronaut riding a horse"


def run_measured(cmd, timeout, env=None):
    """Run ``cmd``; (return code, peak RSS GiB of that process, wall seconds, stdout, stderr)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err,
                                env=dict(os.environ, GLOG_v="3", **(env or {})))
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        return code, usage.ru_maxrss / 2 ** 20, wall, out.read(), err.read()


def _t2i(ckpt, out, n, attention=None):
    cmd = [sys.executable, "text_to_image.py", "--config", "configs/v2-vpred-inference.yaml", "--ckpt_path", ckpt,
           "--W", "768", "--H", "768", "--n_samples", str(n), "--n_iter", "1", "--sampling_steps", "1",
           "--scale", "9", "--seed", "1", "--prompt", PROMPT, "--output_path", out, "--skip_grid"]
    return cmd + (["--attention", attention] if attention else [])


def ours_t2i(ckpt, n, attention, timeout, keep):
    out = os.path.join(keep, f"t2i_{n}_{attention or 'auto'}")
    code, peak, wall, stdout, stderr = run_measured(_t2i(ckpt, out, n, attention), timeout)
    plan = re.search(r"memory: .*", stderr)
    first = re.search(r"time to first image ([\d.]+) s", stderr)
    return dict(code=code, peak_gib=round(peak, 2), wall_s=round(wall, 1), plan=plan.group(0) if plan else "",
                first_image_s=float(first.group(1)) if first else None, folder=out,
                error="" if code == 0 else (stderr.strip().splitlines() or ["killed"])[-1][:300])


def diffusers_t2i(n, torch_python, timeout):
    code, peak, wall, stdout, stderr = run_measured(
        [torch_python, os.path.abspath(__file__), "--worker", "diffusers_t2i", "--n", str(n)], timeout)
    rec = json.loads(stdout.strip().splitlines()[-1]) if code == 0 and stdout.strip() else {}
    return dict(code=code, peak_gib=round(peak, 2), wall_s=round(wall, 1), **rec,
                error="" if code == 0 else (stderr.strip().splitlines() or ["killed"])[-1][:300])


def diffusers_worker(n):
    """The diffusers side of t2i_768xN: SD 2.1-v structure, random weights, 768 px, 1 step, scale 9."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from bench_txt2img import SD2_TEXT, SD2_UNET, SD2_VAE
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
    from make_pipeline_fixtures import SD_SCHEDULER_SETTINGS, write_tokenizer_files
    tmp = tempfile.mkdtemp()
    write_tokenizer_files(tmp)
    tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="!",
                        model_max_length=77)
    scheduler = DPMSolverMultistepScheduler.from_config(dict(SD_SCHEDULER_SETTINGS, prediction_type="v_prediction"))
    unet = UNet2DConditionModel(**dict(SD2_UNET, sample_size=96, upcast_attention=True))
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**dict(SD2_VAE, sample_size=768)), unet=unet,
                                   text_encoder=CLIPTextModel(CLIPTextConfig(**SD2_TEXT)), tokenizer=tok,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    with torch.no_grad():
        pipe(PROMPT, height=768, width=768, num_inference_steps=1, guidance_scale=9.0, num_images_per_prompt=n,
             generator=torch.Generator().manual_seed(1), output_type="np")
    print(json.dumps(dict(generate_s=round(time.perf_counter() - start, 1),
                          attention=type(unet.attn_processors[next(iter(unet.attn_processors))]).__name__)))


def compare_pngs(a, b):
    import numpy as np
    from PIL import Image
    x = np.asarray(Image.open(a)).astype(int)
    y = np.asarray(Image.open(b)).astype(int)
    return int(np.abs(x - y).max())


def unet_step_ratio(std, chk):
    """chunked / standard UNet time at 768 (time to first image minus nothing: same compile and VAE work)."""
    if std.get("first_image_s") and chk.get("first_image_s"):
        return round(chk["first_image_s"] / std["first_image_s"], 3)
    return None


def bench_train(cases, torch_python, timeout):
    cmd = [sys.executable, os.path.join(BENCH_DIR, "bench_train.py"), "--cases", *cases, "--steps", "2",
           "--warmup", "1", "--json_out", os.path.join(BENCH_DIR, "out", "bench_memory_train.json")]
    if torch_python and "sd2" in cases:
        cmd += ["--torch_python", torch_python]
    code, _, wall, stdout, stderr = run_measured(cmd, timeout)
    path = os.path.join(BENCH_DIR, "out", "bench_memory_train.json")
    rows = json.load(open(path, encoding="utf-8")) if code == 0 and os.path.exists(path) else []
    return dict(code=code, wall_s=round(wall, 1), rows=rows, stdout=stdout[-2000:],
                error="" if code == 0 else stderr[-300:])


def recipe_flash(ckpt, flash, timeout, keep):
    """MindONE's LoRA v-pred recipe as shipped, with its paths given, batch 1 and one step (768 px)."""
    sys.path.insert(0, REPO)
    from datasets.synthetic_shapes import make_dataset
    folder = os.path.join(keep, "recipe_data")
    if not os.path.isdir(os.path.join(folder, "train")):
        make_dataset(folder, num_train=2, num_test=1, size=768, seed=0)
    data = os.path.join(folder, "train")
    out = os.path.join(keep, f"recipe_flash_{flash}")
    cmd = [sys.executable, "train_text_to_image.py", "-c", "configs/train/train_config_lora_v2_vpred.yaml",
           "--data_path", data, "--pretrained_model_path", ckpt, "--output_path", out, "--train_batch_size", "1",
           "--max_steps", "1", "--epochs", "1", "--enable_flash_attention", str(flash), "--show_progress", "False",
           "--mode", "1"]
    code, peak, wall, stdout, stderr = run_measured(cmd, timeout)
    notice = re.search(r"enable_flash_attention: .*", stderr)
    return dict(code=code, peak_gib=round(peak, 2), wall_s=round(wall, 1), notice=notice.group(0) if notice else "",
                error="" if code == 0 else (stderr.strip().splitlines() or [f"killed (exit {code})"])[-1][:300])


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                   help="python with torch + diffusers for the reference side (empty: ours only)")
    p.add_argument("--ckpt", default=None, help="full-size random checkpoint (default: made by bench/random_sd.py)")
    p.add_argument("--timeout", type=int, default=2400, help="seconds per case and side")
    p.add_argument("--keep", default=os.path.join(tempfile.gettempdir(), "msd-bench-memory"),
                   help="folder for the cases' outputs (images, training runs)")
    p.add_argument("--json_out", default=os.path.join(BENCH_DIR, "out", "bench_memory.json"))
    p.add_argument("--worker", choices=("diffusers_t2i",), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        diffusers_worker(args.n)
        return 0
    from machine import machine_line, machine_record
    from random_sd import random_checkpoint
    ckpt = args.ckpt or random_checkpoint()
    os.makedirs(args.keep, exist_ok=True)
    record = dict(machine=machine_record(args.torch_python), cases={})
    print(machine_line(record["machine"]), flush=True)
    res = record["cases"]
    if "t2i_768x4" in args.cases:
        res["t2i_768x4"] = dict(ours=ours_t2i(ckpt, 4, None, args.timeout, args.keep),
                                diffusers=diffusers_t2i(4, args.torch_python, args.timeout) if args.torch_python
                                else {})
        print("t2i_768x4", json.dumps(res["t2i_768x4"]), flush=True)
    if "t2i_768x1_std" in args.cases:
        res["t2i_768x1_std"] = dict(ours=ours_t2i(ckpt, 1, "standard", args.timeout, args.keep))
        print("t2i_768x1_std", json.dumps(res["t2i_768x1_std"]), flush=True)
    if "t2i_768x1_chk" in args.cases:
        res["t2i_768x1_chk"] = dict(ours=ours_t2i(ckpt, 1, "chunked", args.timeout, args.keep))
        std = res.get("t2i_768x1_std", {}).get("ours", {})
        chk = res["t2i_768x1_chk"]["ours"]
        if std.get("code") == 0 and chk.get("code") == 0:
            png = os.path.join("samples", "00000.png")
            chk["max_diff_vs_standard"] = compare_pngs(os.path.join(std["folder"], png),
                                                       os.path.join(chk["folder"], png))
            chk["time_ratio_vs_standard"] = unet_step_ratio(std, chk)
        print("t2i_768x1_chk", json.dumps(res["t2i_768x1_chk"]), flush=True)
    if "train_256" in args.cases:
        res["train_256"] = bench_train(["sd2"], args.torch_python, args.timeout)
        print("train_256", res["train_256"]["stdout"], flush=True)
    if "train_768" in args.cases:
        res["train_768"] = bench_train(["sd2_768_pynative"], "", args.timeout)
        print("train_768", res["train_768"]["stdout"], flush=True)
    if "recipe_flash" in args.cases:
        res["recipe_flash"] = {str(flag): recipe_flash(ckpt, flag, args.timeout, args.keep) for flag in (True, False)}
        print("recipe_flash", json.dumps(res["recipe_flash"]), flush=True)
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
