"""Batch prompt-file evaluation in one command: generate, then FID (+KID) against real images and CLIP score.

    python scripts/eval_prompts.py --data_path test_prompts.txt --real_dir data/test_images \\
        --config configs/v2-vpred-inference.yaml --ckpt_path models/sd_v2_768_v-e12e3a9b.ckpt \\
        --output_path out/eval --fid_ckpt models/pt_inception-2015-12-05-6726825d.pth \\
        --clip_checkpoint models/clip-vit-base-patch16 --kid -- --dpm_solver --sampling_steps 15 --scale 9 --W 768 --H 768

Everything after ``--`` (and any flag this script does not know) goes to text_to_image.py unchanged.
Images and text_to_image.py's manifest land in --output_path; the results table is written there
as results.md and results.json (FID with its N; KID with subsets; CLIP score with N and the CSV).
With --skip_generate an existing output folder is evaluated as it is.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ldm.cli_args import OneLineParser, output_folder, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402


def build_parser():
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("generation (text_to_image.py)")
    g.add_argument("--data_path", required=True, help="prompt file, one prompt a line")
    g.add_argument("--config", default=None, help="model YAML passed to text_to_image.py")
    g.add_argument("--ckpt_path", default=None, help="model checkpoint passed to text_to_image.py")
    g.add_argument("--output_path", required=True, help="run folder: samples/, manifest, results.md/json")
    g.add_argument("--n_samples", type=positive_int, default=1,
                   help="batch size passed to text_to_image.py (different prompts a batch, one image per prompt)")
    g.add_argument("--skip_generate", action="store_true", help="evaluate the images already in --output_path")
    g = p.add_argument_group("evaluation")
    g.add_argument("--real_dir", default=None, help="real test images for FID/KID (omit to skip FID)")
    g.add_argument("--fid_ckpt", default=None,
                   help="Inception weights (default: models/pt_inception-2015-12-05-6726825d.pth)")
    g.add_argument("--kid", action="store_true", help="also report KID")
    g.add_argument("--fid_method", default="eig", choices=("eig", "sqrtm"),
                   help="'sqrtm' = pytorch-fid's scipy sqrtm (slow at 2048 dims); 'eig' = same trace, ~10x faster")
    g.add_argument("--kid_subset_size", type=positive_int, default=1000, help="KID subset size (clamped to N)")
    g.add_argument("--clip_checkpoint", default=None, help="CLIP weights for CLIP score (omit to skip it)")
    g.add_argument("--clip_model_name", default=None, help="CLIP architecture for .pt/.ckpt files (ViT-B/32 ...)")
    g.add_argument("--batch_size", type=positive_int, default=50, help="evaluation batch size")
    g.add_argument("--cache_dir", default=None, help="Inception feature cache (default: <folder>/.fid_cache)")
    g.add_argument("--device", default="CPU", help="MindSpore device target for evaluation")
    return p


def check_inputs(args):
    """Everything that can be checked without a model fails here, before a long generation.
    Returns the CLIP weights read (or None)."""
    if not os.path.isfile(args.data_path):
        raise UserError(f"prompt file not found: {args.data_path}")
    from eval.prompts import read_prompt_lines
    read_prompt_lines(args.data_path)              # not UTF-8 / no prompts: one line now, not after text_to_image
    if args.real_dir is None and args.clip_checkpoint is None:
        raise UserError("nothing to evaluate: give --real_dir (FID) and/or --clip_checkpoint (CLIP score)")
    if args.kid_subset_size < 2:
        raise UserError(f"--kid_subset_size must be >= 2 (KID compares pairs), got {args.kid_subset_size}")
    output_folder(args.output_path, "--output_path")
    if args.skip_generate and not os.path.isdir(args.output_path):
        raise UserError(f"--skip_generate: --output_path {args.output_path} does not exist (nothing to evaluate)")
    for name in ("results.md", "results.json", "clip_scores.csv"):
        if os.path.isdir(os.path.join(args.output_path, name)):
            raise UserError(f"{os.path.join(args.output_path, name)} is a folder: cannot write the results there")
    if args.real_dir:
        from eval.images import check_headers, list_images
        check_headers(list_images(args.real_dir))
        from eval.eval_fid import check_weights
        check_weights(args.fid_ckpt)
    if args.clip_model_name is not None:
        from eval.eval_clip_score import MODEL_NAMES
        if args.clip_model_name not in MODEL_NAMES:
            raise UserError(f"--clip_model_name must be one of {', '.join(MODEL_NAMES)}, got {args.clip_model_name!r}")
    if args.clip_checkpoint:  # read now (kept for scoring): a damaged file must not waste a generation
        from eval.clip_model import read_clip_weights
        return read_clip_weights(args.clip_checkpoint, args.clip_model_name)
    return None


def generate(args, passthrough):
    # one image per prompt, prompts packed n_samples a batch (text_to_image.py's MindONE default would
    # make n_iter x n_samples copies of every prompt); a passed-through --n_iter still wins
    cmd = [sys.executable, os.path.join(REPO, "text_to_image.py"), "--data_path", args.data_path,
           "--output_path", args.output_path, "--n_samples", str(args.n_samples), "--pack_prompts", "--n_iter", "1"]
    if args.config:
        cmd += ["--config", args.config]
    if args.ckpt_path:
        cmd += ["--ckpt_path", args.ckpt_path]
    cmd += passthrough
    print("generating:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise UserError(f"text_to_image.py failed (exit {proc.returncode}); see its message above")
    return cmd


def samples_dir(output_path):
    from eval.prompts import find_manifest, read_manifest
    manifest = find_manifest(output_path) or find_manifest(os.path.join(output_path, "samples"))
    if manifest is None:
        raise UserError(f"no manifest (manifest.jsonl/.json/.csv) in {output_path}: was it written by text_to_image.py?")
    folders = {os.path.dirname(p) for p, _ in read_manifest(manifest)}
    if len(folders) != 1:
        raise UserError(f"{manifest}: images spread over {len(folders)} folders, expected one")
    return folders.pop(), manifest


def results_markdown(rows, meta):
    lines = [f"# Prompt-file evaluation ({meta['date']})", "",
             f"- prompts: `{meta['data_path']}`", f"- images: `{meta['images']}` (N={meta['n_images']})",
             f"- generation: `{meta['command'] or 'skipped (existing images)'}`", "",
             "| metric | value | N | notes |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['value']} | {r['n']} | {r['notes']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args, passthrough = build_parser().parse_known_args(argv)
    passthrough = [a for a in passthrough if a != "--"]
    clip_weights = check_inputs(args)
    command = None if args.skip_generate else generate(args, passthrough)

    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device(args.device)
    from eval.images import list_images
    images, manifest = samples_dir(args.output_path)
    n_images = len(list_images(images))
    rows, results = [], {}
    if args.real_dir:
        from eval.eval_fid import compute_fid
        fid = compute_fid(args.real_dir, images, args.fid_ckpt, args.batch_size, args.kid,
                          kid_subset_size=args.kid_subset_size, cache_dir=args.cache_dir,
                          fid_method=args.fid_method)
        results["fid"] = fid
        rows.append({"metric": "FID", "value": f"{fid['fid']:.4f}", "n": f"{fid['n_gen']} gen / {fid['n_real']} real",
                     "notes": "biased upward at small N; compare at equal N"})
        if args.kid:
            rows.append({"metric": "KID", "value": f"{fid['kid_mean']:.6f} +- {fid['kid_std']:.6f}",
                         "n": f"{fid['kid_subsets']} x {fid['kid_subset_size']}", "notes": "unbiased"})
    if args.clip_checkpoint:
        from eval.eval_clip_score import compute_clip_score
        clip = compute_clip_score(images, manifest, args.clip_checkpoint, args.clip_model_name, args.batch_size,
                                  os.path.join(args.output_path, "clip_scores.csv"), clip_weights)
        results["clip"] = {k: v for k, v in clip.items() if k != "per_pair"}
        rows.append({"metric": "CLIP score", "value": f"{clip['clip_score']:.4f}", "n": str(clip["n"]),
                     "notes": f"100*max(mean cos, 0); per image: {os.path.basename(clip['csv'])}"})
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "data_path": args.data_path, "images": images, "n_images": n_images, "manifest": manifest,
            "command": " ".join(command) if command else None}
    write_text_atomic(os.path.join(args.output_path, "results.json"),
                      json.dumps({"meta": meta, "rows": rows, "results": results}, indent=1))
    table = results_markdown(rows, meta)
    write_text_atomic(os.path.join(args.output_path, "results.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    run_cli(main)
