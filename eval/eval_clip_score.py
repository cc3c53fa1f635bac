"""CLIP score (torchmetrics' definition) of generated images against their prompts, in MindSpore.

    python eval/eval_clip_score.py --image_path outputs/samples --load_checkpoint clip-vit-base-patch16/
    python eval/eval_clip_score.py --image_path imgs/ --prompt prompts.txt --load_checkpoint ViT-L-14.pt

Prompts come from text_to_image.py's manifest (found next to the images, or passed as --prompt),
a one-prompt-per-line file (sorted image order), or one literal prompt for every image.
Per-image scores go to a CSV (default: <image_path>/clip_scores.csv).
"""
import argparse
import csv
import io
import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, output_file, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402

MODEL_NAMES = ("ViT-B/32", "ViT-B/16", "ViT-L/14")


def build_parser():
    p = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--image_path", required=True, help="folder of images to score")
    p.add_argument("--prompt", default=None,
                   help="a manifest (manifest.jsonl/.json/.csv), a prompt file (one a line, matched in sorted "
                        "image order), or one literal prompt; default: the manifest beside the images")
    p.add_argument("--load_checkpoint", required=True,
                   help="CLIP weights: Hugging Face folder (config.json + model.safetensors/pytorch_model.bin), "
                        "OpenAI .pt (TorchScript archive or state dict), or a .ckpt written by "
                        "`python -m eval.clip_model --convert SRC DST.ckpt`")
    p.add_argument("--model_name", default=None, choices=MODEL_NAMES,
                   help="architecture of an OpenAI .pt/.ckpt (default: inferred from the weight shapes; "
                        "a Hugging Face folder's config.json always wins)")
    p.add_argument("--batch_size", type=positive_int, default=32, help="pairs per forward pass")
    p.add_argument("--output_csv", default=None, help="per-image scores (default: <image_path>/clip_scores.csv)")
    p.add_argument("--output_json", default=None, help="also write the summary as JSON here")
    p.add_argument("--device", default="CPU", help="MindSpore device target: CPU, GPU or Ascend")
    return p


def compute_clip_score(image_path, prompt, checkpoint, model_name=None, batch_size=32, output_csv=None,
                       weights=None):
    """Returns dict(clip_score, n, csv, per_pair); writes the per-image CSV. ``weights``: the
    checkpoint already read by ``read_clip_weights`` (else it is read here)."""
    from eval.clip_model import load_clip
    from eval.clip_score import CLIPScorer
    from eval.prompts import match_images_to_prompts

    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    pairs = match_images_to_prompts(image_path, prompt)  # bad folders/prompts fail before the model loads
    scorer = CLIPScorer(load_clip(checkpoint, model_name, weights))
    res = scorer.score(pairs, batch_size)
    output_csv = output_csv or os.path.join(image_path, "clip_scores.csv")
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["image", "prompt", "clip_score"])
    for (img, text), score in zip(pairs, res["per_pair"]):
        writer.writerow([os.path.relpath(img, image_path), text, f"{score:.6f}"])
    write_text_atomic(output_csv, table.getvalue(), newline="")
    return {"clip_score": res["clip_score"], "n": res["n"], "csv": output_csv,
            "per_pair": res["per_pair"].tolist(), "checkpoint": checkpoint}


def main(argv=None):
    args = build_parser().parse_args(argv)
    from eval.prompts import match_images_to_prompts
    from eval.images import check_headers
    # bad folders, prompts, image files, output paths or weights fail before any scoring
    check_headers([p for p, _ in match_images_to_prompts(args.image_path, args.prompt)])
    output_file(args.output_csv or os.path.join(args.image_path, "clip_scores.csv"), "--output_csv")
    if args.output_json:
        output_file(args.output_json, "--output_json")
    from eval.clip_model import read_clip_weights
    weights = read_clip_weights(args.load_checkpoint, args.model_name)  # missing / unreadable: one line
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device(args.device)
    res = compute_clip_score(args.image_path, args.prompt, args.load_checkpoint, args.model_name,
                             args.batch_size, args.output_csv, weights)
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps({k: v for k, v in res.items() if k != "per_pair"}, indent=1))
    print(f"CLIP score: {res['clip_score']:.4f}  (N={res['n']}; per-image scores in {res['csv']})")
    return 0


if __name__ == "__main__":
    run_cli(main)
