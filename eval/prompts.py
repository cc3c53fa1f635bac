"""Pair generated images with the prompts they were made from.

Three sources, in this order of trust:

1. a run manifest written by text_to_image.py (``manifest.jsonl``, ``manifest.json`` or
   ``manifest.csv``; columns ``file`` or ``image`` and ``prompt``; paths relative to the
   manifest's folder), found in the image folder or its parent, or passed as --prompt;
2. a text file with one prompt a line, matched to the images in sorted file-name order; when there
   are k times more images than prompts, each prompt covers k consecutive images;
3. a literal prompt, used for every image.
"""
import csv
import io
import json
import os

from ldm.errors import UserError
from ldm.io.text import read_utf8

from eval.images import list_images

MANIFEST_NAMES = ("manifest.jsonl", "manifest.json", "manifest.csv")


def read_text(path, what):
    """The file's text (the project's one text reader: non-UTF-8 bytes are one line naming the byte)."""
    return read_utf8(path, what)


def _records_from_manifest(path):
    text = read_text(path, "manifest")
    if path.endswith(".csv"):
        try:
            return list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise UserError(f"manifest {path} is not a valid CSV file: {exc}") from exc
    if path.endswith(".jsonl"):
        records = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interrupted run
            if isinstance(rec, dict):
                records.append(rec)
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"manifest {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("images") or data.get("records") or []
    return [r for r in data if isinstance(r, dict)]


def read_manifest(path):
    """[(image_path, prompt)] from a manifest; image paths resolved against the manifest's folder."""
    root = os.path.dirname(os.path.abspath(path))
    pairs = []
    for rec in _records_from_manifest(path):
        image = rec.get("file") or rec.get("image") or rec.get("path")
        if not isinstance(image, str) or not isinstance(rec.get("prompt"), str):
            raise UserError(f"manifest {path}: every record needs 'file' (or 'image') and 'prompt' as text")
        full = image if os.path.isabs(image) else os.path.join(root, image)
        pairs.append((full, rec["prompt"]))
    if not pairs:
        raise UserError(f"manifest {path} lists no images")
    missing = [p for p, _ in pairs if not os.path.isfile(p)]
    if missing:
        raise UserError(f"manifest {path}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
    return pairs


def find_manifest(image_dir):
    for folder in (image_dir, os.path.dirname(os.path.abspath(image_dir))):
        for name in MANIFEST_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def read_prompt_lines(path):
    """Non-empty lines of a UTF-8 prompt file; an unreadable or empty file is a UserError."""
    prompts = [line.strip() for line in read_text(path, "prompt file").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"prompt file {path} has no prompts")
    return prompts


def match_images_to_prompts(image_dir, prompt=None):
    """[(image_path, prompt)] for CLIP scoring; see the module docstring for the rules.

    ``prompt``: a manifest path, a prompt file (one a line), a literal prompt, or None (then a
    manifest must sit in ``image_dir`` or its parent).
    """
    if prompt and os.path.isfile(prompt) and os.path.basename(prompt).startswith("manifest"):
        return _restrict_to_folder(read_manifest(prompt), image_dir)
    if prompt and os.path.isfile(prompt):
        prompts = read_prompt_lines(prompt)
        images = list_images(image_dir)
        if len(images) % len(prompts):
            raise UserError(f"{len(images)} images in {image_dir} cannot be matched to {len(prompts)} prompts "
                            f"of {prompt} (need equal counts or a multiple); pass the run's manifest instead")
        per_prompt = len(images) // len(prompts)
        return [(img, prompts[i // per_prompt]) for i, img in enumerate(images)]
    if prompt:
        return [(img, prompt) for img in list_images(image_dir)]
    manifest = find_manifest(image_dir)
    if manifest is None:
        raise UserError(f"no --prompt given and no manifest ({', '.join(MANIFEST_NAMES)}) in {image_dir} "
                        "or its parent: pass a prompt, a prompt file or a manifest")
    return _restrict_to_folder(read_manifest(manifest), image_dir)


def _restrict_to_folder(pairs, image_dir):
    """Manifest records of images that live in ``image_dir`` (a run folder may hold other files)."""
    if not os.path.isdir(image_dir):
        raise UserError(f"image folder not found: {image_dir}")
    folder = os.path.realpath(image_dir)
    inside = [(p, t) for p, t in pairs if os.path.realpath(p).startswith(folder + os.sep)]
    if not inside:
        raise UserError(f"the manifest lists no images inside {image_dir}")
    return inside
