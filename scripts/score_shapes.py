"""Prompt-following score of images generated for synthetic-shapes captions (the demo's check).

For each image and its caption ("a red circle on a white background, top left") it finds the drawn
shape without the caption, then tells whether its colour, its shape, its position and the
background are the captioned ones (``datasets.synthetic_shapes.caption_match``), and prints the
fraction of images right on each and on all four. With ``--min_colour`` / ``--min_shape`` it exits 1 when a fraction is below the bound.

    python scripts/score_shapes.py --output_path output/demo/samples --min_colour 0.6 --min_shape 0.5
"""
import json
import os
import sys

from PIL import Image, UnidentifiedImageError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic_shapes import score_images  # noqa: E402
from ldm.cli_args import OneLineParser, fraction, output_file, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402
from ldm.io.manifest import Manifest  # noqa: E402


def load_pairs(output_path):
    """(image, caption) for every image recorded in a text_to_image.py run's manifest.jsonl."""
    if not os.path.isdir(output_path):
        raise UserError(f"--output_path {output_path} is not a folder (give a text_to_image.py --output_path)")
    manifest = Manifest(output_path)
    if not os.path.isfile(manifest.path):
        raise UserError(f"no manifest.jsonl in {output_path} (give a text_to_image.py --output_path)")
    try:
        records = manifest.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{manifest.path} is not UTF-8 text (byte {exc.start})") from exc
    except (TypeError, ValueError) as exc:   # a record whose index / file is not what text_to_image.py writes
        raise UserError(f"{manifest.path}: a record is not a text_to_image.py record ({exc})") from exc
    if not records:
        raise UserError(f"{manifest.path} holds no complete record of an existing image (torn, non-UTF-8 "
                        "or non-JSON lines are skipped)")
    pairs = []
    for _, rec in sorted(records.items()):
        if not isinstance(rec.get("prompt"), str):
            raise UserError(f"{manifest.path}: record {rec.get('index')} has no 'prompt' text")
        path = os.path.join(output_path, rec["file"])
        try:
            with Image.open(path) as img:
                pairs.append((img.convert("RGB"), rec["prompt"]))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from exc
    return pairs


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", required=True,
                        help="a text_to_image.py output folder (its manifest.jsonl names images and prompts)")
    parser.add_argument("--min_colour", type=fraction, default=0.0,
                        help="exit 1 if the fraction of images whose shape has the captioned colour is below this")
    parser.add_argument("--min_shape", type=fraction, default=0.0,
                        help="exit 1 if the fraction of images with the captioned shape in the captioned colour is below this")
    parser.add_argument("--min_position", type=fraction, default=0.0,
                        help="exit 1 if the fraction of images whose shape is nearest the captioned position is below this")
    parser.add_argument("--json_out", default="", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if args.json_out:
        output_file(args.json_out, "--json_out")
    scores = score_images(load_pairs(args.output_path))
    if args.json_out:  # before the summary: a full disk must not follow a printed result
        write_text_atomic(args.json_out, json.dumps(scores, indent=1))
    print(f"prompt following on {scores['n']} images: colour {scores['colour']:.3f}, "
          f"shape {scores['shape']:.3f}, position {scores['position']:.3f}, "
          f"background {scores['background']:.3f}, all four {scores['all']:.3f}")
    if scores["colour"] < args.min_colour or scores["shape"] < args.min_shape or scores["position"] < args.min_position:
        print(f"below the bound: colour >= {args.min_colour}, shape >= {args.min_shape}, "
              f"position >= {args.min_position} required",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
