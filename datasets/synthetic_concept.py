"""A concept the demo base never saw: a new shape (a five-pointed star or a plus) in the synthetic-shapes
style, as the image folders textual inversion and DreamBooth learn it from, plus the prompts that test it.

The tiny demo base (models/tiny_shapes_base.ckpt) was trained on circles, squares and triangles only
(datasets/synthetic_shapes.py, whose outputs this module leaves alone). Here the new shape is drawn in ONE
colour on ONE background (the instance set); the held-out prompts ask for it in the other colours and
backgrounds, so a model that passes has learnt the shape, not the picture. :func:`find_concept` tells the
drawn shape among the four by mask IoU, as ``synthetic_shapes.find_shape`` does among three.

    python datasets/synthetic_concept.py --output_path datasets/concept_star --concept star --num_images 8

writes (MindONE's folder formats)::

    instance/00000.png ...   the concept images: DreamBooth's instance_data_dir, textual inversion's train_data_dir
    ti_templates.txt         textual inversion's template_file ("a red {} on a white background, center")
    concept.json             concept, colour, background, token, placeholder, instance_prompt, class_prompt
    heldout_token.txt        held-out prompts with the rare token ("a blue sks on a black background, center")
    heldout_placeholder.txt  the same prompts with the textual-inversion placeholder ("a blue <star> on ...")
    class_prompts.txt        ordinary captions of the three known shapes (what prior preservation must keep)
"""
import json
import math
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic_shapes import (BACKGROUNDS, COLOURS, MAX_SIZE, POSITIONS, SHAPE_RADIUS, SHAPES,  # noqa: E402
                                       background_of, find_shape, score_images, shape_mask)
from ldm.cli_args import OneLineParser, output_folder, positive_int, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402

CONCEPTS = ("star", "plus")
STAR_INNER = 0.45      # inner / outer radius; at 32 px its mask IoU with circle, square, triangle is 0.49, 0.39, 0.53
PLUS_HALF_WIDTH = 0.3  # half the arm width over the half extent; IoU with circle 0.65 (the star is the default: 0.53 at most)
MAX_IMAGES = 10_000
POSITION = "center"    # the base does not learn positions (docs/demo.md "Demo model"): keep the concept centred
DEFAULT_TOKEN = "sks"  # DreamBooth's rare token (one BPE token of the CLIP vocabulary)


def _unit_outline(concept):
    """The concept's outline in [-1, 1]^2, its bounding box exactly that square (as the three known
    shapes' boxes are), so find_shape's box centre is the shape's centre."""
    if concept == "star":
        pts = [((1.0 if k % 2 == 0 else STAR_INNER) * math.sin(k * math.pi / 5),
                -(1.0 if k % 2 == 0 else STAR_INNER) * math.cos(k * math.pi / 5)) for k in range(10)]
    elif concept == "plus":
        w = PLUS_HALF_WIDTH
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
               (-w, -w)]
    else:
        raise UserError(f"unknown concept {concept!r}; choose one of {', '.join(CONCEPTS)}")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    sx, sy = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    return [((x - mx) / sx, (y - my) / sy) for x, y in pts]


def _draw_concept(pen, concept, cx, cy, r, fill):
    pen.polygon([(cx + x * r, cy + y * r) for x, y in _unit_outline(concept)], fill=fill)


def draw_concept(concept, colour, background, size, offset=(0.0, 0.0)):
    """One concept image (PIL RGB, ``size`` px), centred, moved by ``offset`` pixels."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    _draw_concept(ImageDraw.Draw(img), concept, size / 2 + offset[0], size / 2 + offset[1], SHAPE_RADIUS * size,
                  COLOURS[colour])
    return img


def concept_mask(concept, cx, cy, size):
    """Boolean (size, size) mask of the concept centred at pixel (cx, cy), as :func:`draw_concept` draws it."""
    img = Image.new("L", (size, size), 0)
    _draw_concept(ImageDraw.Draw(img), concept, cx, cy, SHAPE_RADIUS * size, 255)
    return np.asarray(img) > 127


def candidate_masks(concept):
    """name -> mask function of the four shapes a drawn shape is told apart from (the known three + concept)."""
    _unit_outline(concept)   # unknown concept: one error line
    masks = {shape: (lambda cx, cy, size, s=shape: shape_mask(s, cx, cy, size)) for shape in SHAPES}
    masks[concept] = lambda cx, cy, size: concept_mask(concept, cx, cy, size)
    return masks


def find_concept(image, concept):
    """``find_shape`` among circle, square, triangle and ``concept``: (colour, shape, centre) or None."""
    return find_shape(image, candidate_masks(concept))


def prompt(colour, word, background):
    """The base's caption form with ``word`` in the shape's place (position: centre)."""
    return f"a {colour} {word} on a {background} background, {POSITION}"


def heldout_pairs(colour, background):
    """Every (colour, background) except the instance set's and yellow ones: the concept must transfer
    to these. Yellow is left out because the demo VAE cannot draw a yellow star: encoding and decoding
    the true images, the yellow ones score circle on all three backgrounds, every other pair scores star
    (measured 2026-12-02), so a yellow prompt would test the VAE, not what was learnt."""
    return [(c, b) for c in COLOURS for b in BACKGROUNDS if (c, b) != (colour, background) and c != "yellow"]


def class_prompts(colour, background):
    """Captions of the three known shapes: in the instance colour and background (closest to the training
    prompt, so the first to drift) and in every held-out pair."""
    return [prompt(c, shape, b) for c, b in [(colour, background)] + heldout_pairs(colour, background)
            for shape in SHAPES]


def parse_prompt(text):
    """(word, colour, background, position) of a caption in the base's form whose shape word may be any one
    word (a known shape, the rare token, the placeholder); raises UserError otherwise."""
    try:
        head, position = text.rsplit(", ", 1)
        a, colour, word, on, a2, background, bg_word = head.split(" ")
    except ValueError as exc:
        raise UserError(f"not a synthetic-shapes caption: {text!r}") from exc
    if (a, on, a2, bg_word) != ("a", "on", "a", "background") or colour not in COLOURS \
            or background not in BACKGROUNDS or position not in POSITIONS:
        raise UserError(f"not a synthetic-shapes caption: {text!r}")
    return word, colour, background, position


def score_concept_images(pairs, concept):
    """Scores of (image, prompt) pairs from a concept run; the prompt's shape word decides the group.

    ``concept`` group (prompts whose word is not circle/square/triangle: the rare token or the
    placeholder): the fraction whose drawn shape, told apart among the four by mask IoU, is the concept
    (``concept``), also in the asked colour (``concept_colour``), and on the asked background.
    ``class`` group (ordinary captions): ``synthetic_shapes.score_images``'s fractions (the base's own
    shape score, three candidates) plus ``drawn_as_concept``, the fraction the four-way test calls the
    concept (how far the concept leaked into the known shapes). A group without images is left out."""
    groups = {"concept": [], "class": []}
    for image, text in pairs:
        word = parse_prompt(text)[0]
        groups["class" if word in SHAPES else "concept"].append((image, text))
    if not pairs:
        raise UserError("no images to score")
    out = {}
    if groups["concept"]:
        rows = []
        for image, text in groups["concept"]:
            _, colour, background, _ = parse_prompt(text)
            found = find_concept(image, concept)
            is_concept = found is not None and found[1] == concept
            rows.append((is_concept, is_concept and found[0] == colour, background_of(image) == background))
        rows = np.asarray(rows, dtype=np.float64)
        out["concept"] = dict(concept=float(rows[:, 0].mean()), concept_colour=float(rows[:, 1].mean()),
                              background=float(rows[:, 2].mean()), n=len(rows))
    if groups["class"]:
        scores = score_images(groups["class"])
        found = [find_concept(image, concept) for image, _ in groups["class"]]
        scores["drawn_as_concept"] = float(np.mean([f is not None and f[1] == concept for f in found]))
        out["class"] = scores
    return out


def make_concept_set(output_path, concept="star", num_images=8, colour="red", background="white", size=32,
                     token=DEFAULT_TOKEN, placeholder=None, class_shape="square", jitter=1.0, seed=0):
    """Write the folders and prompt files of the module docstring; returns the concept.json dict.

    Instance images differ only by a seeded sub-pixel-to-``jitter``-pixel shift of the centre (the
    several photos of one object that DreamBooth expects), so none is a copy of another."""
    placeholder = placeholder or f"<{concept}>"
    if class_shape not in SHAPES:
        raise UserError(f"--class_shape must be one of {', '.join(SHAPES)}, got {class_shape!r}")
    rng = random.Random(seed)
    folder = os.path.join(output_path, "instance")
    os.makedirs(folder, exist_ok=True)
    for i in range(num_images):
        offset = (rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter))
        draw_concept(concept, colour, background, size, offset).save(os.path.join(folder, f"{i:05d}.png"))
    info = dict(concept=concept, colour=colour, background=background, size=size, num_images=num_images,
                token=token, placeholder=placeholder, instance_prompt=prompt(colour, token, background),
                class_prompt=prompt(colour, class_shape, background))
    pairs = heldout_pairs(colour, background)
    write_text_atomic(os.path.join(output_path, "ti_templates.txt"), prompt(colour, "{}", background) + "\n")
    write_text_atomic(os.path.join(output_path, "heldout_token.txt"),
                      "".join(prompt(c, token, b) + "\n" for c, b in pairs))
    write_text_atomic(os.path.join(output_path, "heldout_placeholder.txt"),
                      "".join(prompt(c, placeholder, b) + "\n" for c, b in pairs))
    write_text_atomic(os.path.join(output_path, "class_prompts.txt"),
                      "".join(p + "\n" for p in class_prompts(colour, background)))
    write_text_atomic(os.path.join(output_path, "concept.json"), json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None):
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_path", default="datasets/concept_star", help="folder to write the concept set into")
    parser.add_argument("--concept", default="star", choices=CONCEPTS, help="the new shape")
    parser.add_argument("--num_images", type=positive_int, default=8, help="instance images")
    parser.add_argument("--colour", default="red", choices=sorted(COLOURS), help="the instance images' colour")
    parser.add_argument("--background", default="white", choices=sorted(BACKGROUNDS),
                        help="the instance images' background")
    parser.add_argument("--size", type=positive_int, default=32, help="image side in pixels (multiple of 8)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="DreamBooth's rare word for the concept")
    parser.add_argument("--placeholder", default="", help="textual inversion's placeholder (default <CONCEPT>)")
    parser.add_argument("--class_shape", default="square", choices=SHAPES,
                        help="the known shape of concept.json's class_prompt (DreamBooth's prior preservation)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instance images' shifts")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 16 or args.size > MAX_SIZE:
        raise UserError(f"--size must be a multiple of 8 in [16, {MAX_SIZE}], got {args.size}")
    if args.num_images > MAX_IMAGES:
        raise UserError(f"--num_images must be <= {MAX_IMAGES}, got {args.num_images}")
    for flag, word in (("--token", args.token), ("--placeholder", args.placeholder)):
        if word != word.strip() or " " in word or "{" in word or "}" in word or (flag == "--token" and not word):
            raise UserError(f"{flag} must be one word without spaces or braces, got {word!r}")
    output_folder(args.output_path, "--output_path")
    output_folder(os.path.join(args.output_path, "instance"), "--output_path")
    info = make_concept_set(args.output_path, args.concept, args.num_images, args.colour, args.background, args.size,
                            args.token, args.placeholder or None, args.class_shape, seed=args.seed)
    print(f"wrote {args.num_images} {args.colour} {args.concept} images on {args.background} to "
          f"{args.output_path}/instance; instance prompt {info['instance_prompt']!r}")
    return 0


if __name__ == "__main__":
    run_cli(main)
