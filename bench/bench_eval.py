"""Evaluation speed: images/s of FID feature extraction and CLIP scoring, ours (MindSpore) next to
pytorch-fid / transformers on the same weights and images.

    python bench/bench_eval.py [--torch_python /tmp/msd-fixture-env/bin/python] [--n_images 32]

(that interpreter: ``bash tests/fixtures/make_fixture_env.sh /tmp/msd-fixture-env``)

FID: the random FID Inception of tests/fixtures/eval (identical structure and cost to the real
pt_inception weights), 40x40 images resized to 299 inside the timed loop, as both tools do.
CLIP: a randomly initialised CLIP of --clip_preset size (ViT-B/32 by default) made once by the
torch side with save_pretrained (without a torch interpreter: only ours, on a random .ckpt), PIL
preprocessing + both towers + cosine per pair. Writes bench/out/bench_eval.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

FIX = os.path.join(REPO, "tests", "fixtures", "eval")
WEIGHTS = os.path.join(FIX, "fid_inception_random.pth")
PROMPTS = ["a red circle on a grey background", "two blue squares", "a photo of a cat", "an empty scene"]


def bench_ours_fid(paths, batch_size):
    import numpy as np
    from eval.images import load_unit_images
    from eval.inception import InceptionFeatureExtractor
    ext = InceptionFeatureExtractor(WEIGHTS)
    ext(np.stack(load_unit_images(paths[:batch_size])))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        ext(np.stack(load_unit_images(paths[i:i + batch_size])))
    return len(paths) / (time.perf_counter() - start)


def bench_ours_clip(model, paths, prompts, batch_size):
    from eval.clip_score import CLIPScorer
    scorer = CLIPScorer(model)
    pairs = list(zip(paths, prompts))
    scorer.score(pairs[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    scorer.score(pairs, batch_size)
    return len(pairs) / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", ""),
                   help="python with torch + pytorch-fid + transformers (empty: ours only)")
    p.add_argument("--n_images", type=int, default=32, help="images timed per tool")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--clip_preset", default="ViT-B/32", choices=("ViT-B/32", "ViT-B/16", "ViT-L/14"))
    p.add_argument("--output", default=os.path.join(HERE, "out", "bench_eval.json"))
    args = p.parse_args(argv)

    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    from eval.clip_model import CLIPModel, hf_config_from_preset, load_clip
    from eval.images import list_images

    real = list_images(os.path.join(FIX, "images", "real")) + list_images(os.path.join(FIX, "images", "gen"))
    paths = (real * (args.n_images // len(real) + 1))[:args.n_images]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(paths))]
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "n_images": len(paths),
               "batch_size": args.batch_size, "clip_preset": args.clip_preset, "mindspore": ms.__version__}

    with tempfile.TemporaryDirectory() as tmp:
        clip_folder = os.path.join(tmp, "clip")
        if args.torch_python:
            subprocess.run([args.torch_python, os.path.join(HERE, "bench_eval_torch.py"), "--make_clip",
                            "--clip_folder", clip_folder, "--clip_preset", args.clip_preset,
                            "--fid_weights", WEIGHTS, "--images", "x", "--prompts", "x"], check=True,
                           capture_output=True)
            clip_model = load_clip(clip_folder)
        else:
            clip_model = CLIPModel(hf_config_from_preset(args.clip_preset))
            clip_model.set_train(False)
        results["ours_fid_img_per_s"] = bench_ours_fid(paths, args.batch_size)
        results["ours_clip_img_per_s"] = bench_ours_clip(clip_model, paths, prompts, args.batch_size)
        if args.torch_python:
            proc = subprocess.run([args.torch_python, os.path.join(HERE, "bench_eval_torch.py"),
                                   "--fid_weights", WEIGHTS, "--clip_folder", clip_folder,
                                   "--batch_size", str(args.batch_size), "--images", *paths, "--prompts", *prompts],
                                  capture_output=True, text=True, check=True)
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
            results.update({f"torch_{k}": v for k, v in ref.items()})

    rows = [("FID features (Inception-v3, 299 px)", "fid_img_per_s", "pytorch-fid"),
            (f"CLIP score ({args.clip_preset}, both towers)", "clip_img_per_s", "transformers")]
    print(f"eval speed, {results['n_images']} images, batch {args.batch_size}, {results['machine']}")
    print(f"| task | ours (MindSpore {ms.__version__}) img/s | reference img/s | ours / reference |")
    print("|---|---|---|---|")
    for label, key, ref_name in rows:
        ours = results[f"ours_{key}"]
        ref = results.get(f"torch_{key}")
        ref_txt = f"{ref:.2f} ({ref_name})" if ref else "n/a"
        ratio = f"{ours / ref:.2f}" if ref else "n/a"
        print(f"| {label} | {ours:.2f} | {ref_txt} | {ratio} |")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
