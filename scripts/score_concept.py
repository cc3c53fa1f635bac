"""Score samples of a new-concept run (textual inversion or DreamBooth on the synthetic-shapes demo).

For each image of a text_to_image.py output folder, the prompt's shape word decides what is checked:
prompts naming the concept by its rare token or placeholder ("a blue sks on a black background,
center") count as concept prompts, scored by the fraction whose drawn shape is the concept (told apart
from circle, square and triangle by mask IoU, ``datasets.synthetic_concept.find_concept``); ordinary
captions are class prompts, scored as scripts/score_shapes.py does (colour, shape, background, ...) plus
the fraction drawn as the concept. Prints one JSON object ({"concept": {...}, "class": {...}}, a group
without images left out); with ``--min_concept`` it exits 1 when the concept fraction is below it.

    python scripts/score_concept.py --output_path output/concepts/ti_samples --concept star --min_concept 0.5
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic_concept import CONCEPTS, score_concept_images  # noqa: E402
from ldm.cli_args import OneLineParser, fraction, output_file, write_text_atomic  # noqa: E402
from ldm.errors import run_cli  # noqa: E402
from scripts.score_shapes import load_pairs  # noqa: E402


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", required=True,
                        help="a text_to_image.py output folder (its manifest.jsonl names images and prompts)")
    parser.add_argument("--concept", default="star", choices=CONCEPTS, help="the new shape the concept prompts ask for")
    parser.add_argument("--min_concept", type=fraction, default=0.0,
                        help="exit 1 if the fraction of concept-prompt images drawn as the concept is below this")
    parser.add_argument("--json_out", default="", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if args.json_out:
        output_file(args.json_out, "--json_out")
    scores = score_concept_images(load_pairs(args.output_path), args.concept)
    text = json.dumps(scores, sort_keys=True)
    if args.json_out:  # before the summary: a full disk must not follow a printed result
        write_text_atomic(args.json_out, json.dumps(scores, indent=1, sort_keys=True) + "\n")
    print(text)
    got = scores.get("concept", {}).get("concept")
    if args.min_concept > 0 and (got is None or got < args.min_concept):
        print(f"below the bound: concept >= {args.min_concept} required, got "
              f"{'no concept prompts' if got is None else f'{got:.3f}'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
