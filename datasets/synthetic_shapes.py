"""Synthetic image-caption data: coloured shapes on plain backgrounds, captions that say what is where.

Writes MindONE's folder format (images + ``img_txt.csv`` with ``dir,text`` columns), a train/test split
and a test prompt file, so the whole toolkit (train, sample, evaluate) can be exercised without
downloading anything. The same vocabulary drives :func:`caption_match`, which scores whether a
generated image follows its prompt (right colour in the right region).

    python datasets/synthetic_shapes.py --output_path datasets/shapes --num_train 400 --num_test 40
"""
import argparse
import csv
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    r = SHAPE_RADIUS * size
    box = (cx - r, cy - r, cx + r, cy + r)
    pen = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return img


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
    tmp = os.path.join(folder, "img_txt.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["dir", "text"])
        writer.writerows(rows)
    os.replace(tmp, os.path.join(folder, "img_txt.csv"))
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
    with open(os.path.join(output_path, "test_prompts.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(test_prompts) + "\n")
    return output_path


def region_mean(image, position):
    """Mean RGB of the square region where a shape at ``position`` sits (inner half of the shape)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    size = arr.shape[0]
    cx, cy = (v * size for v in POSITIONS[position])
    r = max(1, int(round(SHAPE_RADIUS * size * 0.5)))
    y0, x0 = int(round(cy)) - r, int(round(cx)) - r
    return arr[max(y0, 0):y0 + 2 * r, max(x0, 0):x0 + 2 * r].reshape(-1, 3).mean(axis=0)


def nearest_colour(rgb, palette):
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name]) - rgb) ** 2)))


def shape_mask(shape, position, size):
    """Boolean (size, size) mask of where :func:`draw` puts ``shape`` at ``position``."""
    img = draw(shape, "red", "black", position, size)
    return np.asarray(img, dtype=np.int16)[..., 0] > 128


def classify_shape(image, colour, position):
    """Which of SHAPES best explains the pixels of ``colour`` around ``position`` (IoU with each
    shape's exact mask there). A pixel counts as the shape's when it is nearer to ``colour`` than to
    every other colour and background of the palette."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    palette = {**COLOURS, **{"bg:" + k: v for k, v in BACKGROUNDS.items()}}
    names = list(palette)
    dists = np.stack([np.sum((arr - np.asarray(palette[n])) ** 2, axis=-1) for n in names])
    painted = dists.argmin(axis=0) == names.index(colour)
    ious = {}
    for shape in SHAPES:
        mask = shape_mask(shape, position, arr.shape[0])
        union = np.logical_or(mask, painted).sum()
        ious[shape] = np.logical_and(mask, painted).sum() / union if union else 0.0
    return max(ious, key=ious.get)


def caption_match(image, text):
    """Score how well an image follows its synthetic caption.

    Returns ``{"colour", "shape", "background"}`` booleans: the region where the caption puts the
    shape is nearest (in RGB) to the captioned colour among shape colours and backgrounds; the
    pixels of that colour overlap the captioned shape's mask there more than the other shapes'
    masks (IoU); the image's corners are nearest to the captioned background.
    """
    shape, colour, background, position = parse_caption(text)
    palette = {**COLOURS, **{"bg:" + k: v for k, v in BACKGROUNDS.items()}}
    colour_ok = nearest_colour(region_mean(image, position), palette) == colour
    shape_ok = classify_shape(image, colour, position) == shape
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    k = max(1, arr.shape[0] // 10)
    corners = np.concatenate([arr[:k, :k], arr[:k, -k:], arr[-k:, :k], arr[-k:, -k:]]).reshape(-1, 3)
    bg_ok = nearest_colour(corners.mean(axis=0), BACKGROUNDS) == background
    return {"colour": colour_ok, "shape": shape_ok, "background": bg_ok}


def score_images(pairs):
    """Fractions of (image, caption) pairs whose colour, shape, background (and all three) match."""
    results = [caption_match(image, text) for image, text in pairs]
    if not results:
        raise UserError("no images to score")
    keys = ("colour", "shape", "background")
    scores = {k: float(np.mean([r[k] for r in results])) for k in keys}
    scores["all"] = float(np.mean([all(r[k] for k in keys) for r in results]))
    scores["n"] = len(results)
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", default="datasets/shapes",
                        help="folder to write train/, test/ and test_prompts.txt into")
    parser.add_argument("--num_train", type=int, default=400, help="number of training images")
    parser.add_argument("--num_test", type=int, default=40, help="number of test images/prompts")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sample choice")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 16:
        raise UserError(f"--size must be a multiple of 8 and >= 16, got {args.size}")
    if args.num_train < 1 or args.num_test < 1:
        raise UserError("--num_train and --num_test must be positive")
    make_dataset(args.output_path, args.num_train, args.num_test, args.size, args.seed)
    print(f"wrote {args.num_train} train and {args.num_test} test images to {args.output_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
