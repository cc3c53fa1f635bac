"""ControlNet data in the synthetic-shapes style: a shape anywhere in the picture (not only at the five captioned
places the demo base knows), its canny edge map as the control image, and a caption without the position, so
the place can only come from the control image.

    python datasets/synthetic_control.py --output_path datasets/shapes_control --num_train 2000 --num_test 40

writes MindONE's train_cldm layout (``prompt.json`` one JSON object a line: ``source`` = control image, ``target`` =
image, ``prompt``) for each split, plus the held-out truth the scorer reads::

    train/prompt.json, train/source/00000.png (edges), train/target/00000.png (image)
    test/prompt.json,  test/source/...,  test/target/...
    test/truth.jsonl   one line per test sample: index, prompt, shape, colour, background, cx, cy (pixels)

The shape's centre is uniform in [SHAPE_RADIUS + MARGIN, 1 - SHAPE_RADIUS - MARGIN] of the side on both axes, so
the whole shape is always inside; edges are ``ldm.data.canny.canny(image, 100, 200)`` (controlnet_image2image.py's
defaults) as 3 equal channels, white on black.
"""
import json
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic_shapes import BACKGROUNDS, COLOURS, MAX_SIZE, SHAPE_RADIUS, SHAPES, _draw_shape  # noqa: E402
from ldm.cli_args import OneLineParser, output_folder, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402

MARGIN = 0.02          # between the shape's box and the border, as a fraction of the side
MAX_IMAGES = 100_000
CANNY_LOW, CANNY_HIGH = 100, 200


def caption(shape, colour, background):
    """The synthetic-shapes caption without its position: the control image says where."""
    return f"a {colour} {shape} on a {background} background"


def draw_at(shape, colour, background, cx, cy, size):
    """A PIL RGB image of ``size`` px with ``shape`` centred at pixel (cx, cy)."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, SHAPE_RADIUS * size, COLOURS[colour])
    return img


def edges_of(image):
    """The control image of ``image``: its canny edges, 3 equal channels (uint8 (H, W, 3))."""
    from ldm.data.canny import canny
    edges = canny(np.asarray(image.convert("RGB"), dtype=np.uint8), CANNY_LOW, CANNY_HIGH)
    return np.repeat(edges[..., None], 3, axis=-1)


def draw_specs(rng, count, size):
    """``count`` random (shape, colour, background, cx, cy) with centres in pixels (two decimals)."""
    low, high = (SHAPE_RADIUS + MARGIN) * size, (1 - SHAPE_RADIUS - MARGIN) * size
    return [(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS)),
             round(rng.uniform(low, high), 2), round(rng.uniform(low, high), 2)) for _ in range(count)]


def write_split(folder, specs, size, truth=False):
    """target/ images, source/ edge maps and prompt.json (MindONE's layout); with ``truth`` also truth.jsonl."""
    for sub in ("source", "target"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    lines, truths = [], []
    for i, (shape, colour, background, cx, cy) in enumerate(specs):
        name = f"{i:05d}.png"
        image = draw_at(shape, colour, background, cx, cy, size)
        image.save(os.path.join(folder, "target", name))
        Image.fromarray(edges_of(image)).save(os.path.join(folder, "source", name))
        text = caption(shape, colour, background)
        lines.append(json.dumps({"source": f"source/{name}", "target": f"target/{name}", "prompt": text}))
        truths.append(json.dumps(dict(index=i, prompt=text, shape=shape, colour=colour, background=background,
                                      cx=cx, cy=cy)))
    write_text_atomic(os.path.join(folder, "prompt.json"), "\n".join(lines) + "\n")
    if truth:
        write_text_atomic(os.path.join(folder, "truth.jsonl"), "\n".join(truths) + "\n")


def make_dataset(output_path, num_train=2000, num_test=40, size=32, seed=0):
    """train/ and test/ (see the module docstring); the test set is drawn from its own stream."""
    write_split(os.path.join(output_path, "train"), draw_specs(random.Random(seed), num_train, size), size)
    write_split(os.path.join(output_path, "test"), draw_specs(random.Random(seed + 10_007), num_test, size), size,
                truth=True)
    return output_path


def read_truth(folder):
    """The held-out samples of ``folder`` (test/): [dict(index, prompt, shape, colour, background, cx, cy)] in
    index order, with ``control`` the path of each one's control image."""
    from ldm.io.text import read_utf8
    path = os.path.join(folder, "truth.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"no truth.jsonl in {folder} (give the test/ folder of datasets/synthetic_control.py)")
    rows = []
    for number, line in enumerate(read_utf8(path, "truth file").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                row["control"] = os.path.join(folder, "source", f"{int(row['index']):05d}.png")
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{path} line {number}: not a truth record ({exc})") from exc
            rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no records")
    return sorted(rows, key=lambda r: r["index"])


def score_control_images(images, truths, tolerance=4.0):
    """How well images follow their control images and prompts: ``find_shape`` (the shape scorer's) finds each
    image's shape without looking at the truth; ``position`` is the fraction whose centre lies within
    ``tolerance`` pixels of the control's, ``shape`` whose kind is the control's, ``colour`` whose colour is the
    prompt's, ``all`` the three at once; ``centre_error_px`` the mean distance (images where no shape is found count
    as the image's diagonal), ``n`` the count."""
    from datasets.synthetic_shapes import find_shape
    if not images:
        raise UserError("no images to score")
    rows = []
    for image, truth in zip(images, truths):
        found = find_shape(image)
        if found is None:
            rows.append(dict(colour=False, shape=False, position=False, error=float(np.hypot(*image.size))))
            continue
        colour, kind, (cx, cy) = found
        error = float(np.hypot(cx - truth["cx"], cy - truth["cy"]))
        rows.append(dict(colour=colour == truth["colour"], shape=kind == truth["shape"], position=error <= tolerance,
                         error=error))
    scores = {k: float(np.mean([r[k] for r in rows])) for k in ("colour", "shape", "position")}
    scores["all"] = float(np.mean([r["colour"] and r["shape"] and r["position"] for r in rows]))
    scores["centre_error_px"] = float(np.mean([r["error"] for r in rows]))
    scores["n"] = len(rows)
    return scores


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", default="datasets/shapes_control", help="folder for train/ and test/")
    parser.add_argument("--num_train", type=positive_int, default=2000, help="training samples")
    parser.add_argument("--num_test", type=positive_int, default=40, help="held-out samples (with truth.jsonl)")
    parser.add_argument("--size", type=positive_int, default=32, help="image side in pixels (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the samples")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 16 or args.size > MAX_SIZE:
        raise UserError(f"--size must be a multiple of 8 in [16, {MAX_SIZE}], got {args.size}")
    if args.num_train + args.num_test > MAX_IMAGES:
        raise UserError(f"--num_train + --num_test must be <= {MAX_IMAGES}, got {args.num_train + args.num_test}")
    output_folder(args.output_path, "--output_path")
    for sub in ("train", "test"):
        output_folder(os.path.join(args.output_path, sub), "--output_path")
    make_dataset(args.output_path, args.num_train, args.num_test, args.size, args.seed)
    print(f"wrote {args.num_train} train and {args.num_test} test samples to {args.output_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
