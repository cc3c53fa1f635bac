"""Synthetic image-caption data: coloured shapes on plain backgrounds, captions that say what is where.

Writes MindONE's folder format (images + ``img_txt.csv`` with ``dir,text`` columns), a train/test split
and a test prompt file, so the whole toolkit (train, sample, evaluate) can be exercised without
downloading anything. The same vocabulary drives :func:`caption_match`, which scores whether a
generated image follows its prompt (right colour in the right region).

    python datasets/synthetic_shapes.py --output_path datasets/shapes --num_train 400 --num_test 40
"""
import csv
import functools
import io
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, output_folder, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
# position name -> centre as a fraction of the image side (x, y)
POSITIONS = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
# limits of the CLI: beyond them a typo (--size 64000) would fill the disk, not make a demo
MAX_SIZE = 1024
MAX_IMAGES = 1_000_000
SHAPE_RADIUS = 0.2  # half the shape's extent, as a fraction of the image side


def caption(shape, colour, background, position):
    return f"a {colour} {shape} on a {background} background, {position}"


def parse_caption(text):
    """Inverse of :func:`caption`: returns (shape, colour, background, position) or raises UserError."""
    try:
        head, position = text.rsplit(", ", 1)
        _, colour, shape, _, _, background, _ = head.split(" ")
    except ValueError as exc:
        raise UserError(f"not a synthetic-shapes caption: {text!r}") from exc
    if colour not in COLOURS or shape not in SHAPES or background not in BACKGROUNDS \
            or position not in POSITIONS:
        raise UserError(f"not a synthetic-shapes caption: {text!r}")
    return shape, colour, background, position


def draw(shape, colour, background, position, size):
    """Render one sample as a PIL RGB image of ``size`` x ``size`` pixels."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    cx, cy = (v * size for v in POSITIONS[position])
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, SHAPE_RADIUS * size, COLOURS[colour])
    return img


def _draw_shape(pen, shape, cx, cy, r, fill):
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)


def all_combinations():
    return [(s, c, b, p) for s in SHAPES for c in COLOURS for b in BACKGROUNDS for p in POSITIONS]


def write_split(folder, samples, size):
    """Write images and img_txt.csv for one split; returns the captions in file order."""
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i, spec in enumerate(samples):
        name = f"{i:05d}.png"
        draw(*spec, size=size).save(os.path.join(folder, name))
        rows.append((name, caption(*spec)))
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["dir", "text"])
    writer.writerows(rows)
    write_text_atomic(os.path.join(folder, "img_txt.csv"), table.getvalue(), newline="")
    return [text for _, text in rows]


def make_dataset(output_path, num_train=400, num_test=40, size=64, seed=0):
    """Generate train/ and test/ folders plus test_prompts.txt (one test caption a line).

    Test samples cycle through all 180 (shape, colour, background, position) combinations in a
    seeded order, so a small test set still covers every colour and position; train samples are
    drawn independently from the same combinations."""
    rng = random.Random(seed)
    combos = all_combinations()
    rng.shuffle(combos)
    test_specs = [combos[i % len(combos)] for i in range(num_test)]
    train_specs = [rng.choice(combos) for _ in range(num_train)]
    write_split(os.path.join(output_path, "train"), train_specs, size)
    test_prompts = write_split(os.path.join(output_path, "test"), test_specs, size)
    write_text_atomic(os.path.join(output_path, "test_prompts.txt"), "\n".join(test_prompts) + "\n")
    return output_path


def nearest_colour(rgb, palette):
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name]) - rgb) ** 2)))


def shape_mask(shape, cx, cy, size):
    """Boolean (size, size) mask of ``shape`` drawn as :func:`draw` does, centred at pixel (cx, cy)."""
    img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(img), shape, cx, cy, SHAPE_RADIUS * size, 255)
    return np.asarray(img) > 127


def _palette_labels(arr):
    """Per pixel, the name of the nearest palette entry (shape colours, then 'bg:<name>')."""
    palette = {**COLOURS, **{"bg:" + k: v for k, v in BACKGROUNDS.items()}}
    names = list(palette)
    dists = np.stack([np.sum((arr - np.asarray(palette[n])) ** 2, axis=-1) for n in names])
    return np.asarray(names)[dists.argmin(axis=0)]


def find_shape(image, masks=None):
    """The drawn shape, found without looking at the caption: (colour, shape, (cx, cy)) or None.

    Its colour is the shape colour that the most pixels are nearest to; its centre is the middle of
    those pixels' robust (5th-95th percentile) bounding box; its shape is the one whose exact mask
    at that centre overlaps those pixels best (IoU). ``masks``: name -> mask function like
    :func:`shape_mask`'s ``(cx, cy, size)``, the candidate shapes (default: the three of SHAPES; the
    new-concept demo adds its own, datasets/synthetic_concept.py)."""
    if masks is None:
        masks = {shape: functools.partial(shape_mask, shape) for shape in SHAPES}
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    labels = _palette_labels(arr)
    counts = {c: int((labels == c).sum()) for c in COLOURS}
    colour = max(counts, key=counts.get)
    if counts[colour] < 4:
        return None
    painted = labels == colour
    ys, xs = np.nonzero(painted)
    cx = (np.percentile(xs, 5) + np.percentile(xs, 95) + 1) / 2
    cy = (np.percentile(ys, 5) + np.percentile(ys, 95) + 1) / 2
    ious = {}
    for shape, mask_fn in masks.items():
        mask = mask_fn(cx, cy, arr.shape[0])
        ious[shape] = np.logical_and(mask, painted).sum() / np.logical_or(mask, painted).sum()
    return colour, max(ious, key=ious.get), (cx, cy)


def background_of(image):
    """The background whose RGB is nearest to the mean of the image's four corner patches."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    k = max(1, arr.shape[0] // 10)
    corners = np.concatenate([arr[:k, :k], arr[:k, -k:], arr[-k:, :k], arr[-k:, -k:]]).reshape(-1, 3)
    return nearest_colour(corners.mean(axis=0), BACKGROUNDS)


def caption_match(image, text):
    """Score how well an image follows its synthetic caption.

    Returns ``{"colour", "shape", "position", "background"}`` booleans from :func:`find_shape`: the
    shape's colour and kind equal the caption's, its centre is nearest to the captioned position, and
    the image's corners are nearest (in RGB) to the captioned background.
    """
    shape, colour, background, position = parse_caption(text)
    found = find_shape(image)
    size = image.size[1]
    bg_ok = background_of(image) == background
    if found is None:
        return {"colour": False, "shape": False, "position": False, "background": bg_ok}
    got_colour, got_shape, (cx, cy) = found
    got_position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] * size - cx) ** 2 + (POSITIONS[p][1] * size - cy) ** 2)
    return {"colour": got_colour == colour, "shape": got_colour == colour and got_shape == shape,
            "position": got_position == position, "background": bg_ok}


def score_images(pairs):
    """Fractions of (image, caption) pairs whose colour, shape, background (and all three) match."""
    results = [caption_match(image, text) for image, text in pairs]
    if not results:
        raise UserError("no images to score")
    keys = ("colour", "shape", "position", "background")
    scores = {k: float(np.mean([r[k] for r in results])) for k in keys}
    scores["all"] = float(np.mean([all(r[k] for k in keys) for r in results]))  # all four right
    scores["n"] = len(results)
    return scores


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", default="datasets/shapes",
                        help="folder to write train/, test/ and test_prompts.txt into")
    parser.add_argument("--num_train", type=positive_int, default=400, help="number of training images")
    parser.add_argument("--num_test", type=positive_int, default=40, help="number of test images/prompts")
    parser.add_argument("--size", type=positive_int, default=64, help="image side in pixels (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sample choice")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 16:
        raise UserError(f"--size must be a multiple of 8 and >= 16, got {args.size}")
    if args.size > MAX_SIZE:
        raise UserError(f"--size must be <= {MAX_SIZE} (a demo dataset), got {args.size}")
    if args.num_train + args.num_test > MAX_IMAGES:
        raise UserError(f"--num_train + --num_test must be <= {MAX_IMAGES}, got {args.num_train + args.num_test}")
    output_folder(args.output_path, "--output_path")
    for sub in ("train", "test", "test_prompts.txt"):
        path = os.path.join(args.output_path, sub)
        if sub.endswith(".txt") and os.path.isdir(path):
            raise UserError(f"{path} is a folder: cannot write the test prompts there")
        if not sub.endswith(".txt"):
            output_folder(path, "--output_path")
    make_dataset(args.output_path, args.num_train, args.num_test, args.size, args.seed)
    print(f"wrote {args.num_train} train and {args.num_test} test images to {args.output_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
