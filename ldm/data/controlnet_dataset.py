"""(image, control image, caption) triples for ControlNet training (train_controlnet.py, ldm.train.controlnet).

A ``data_path`` folder is read by the first layout that fits:

1. ``prompt.json`` holding one JSON object a line, ``{"source": "source/0.png", "target": "target/0.png",
   "prompt": "..."}`` (MindONE's train_cldm canny layout, lllyasviel's fill50k): ``source`` is the control image,
   ``target`` the image, both relative to the folder;
2. ``prompt.json`` holding one JSON array of ``{"image_id": 7, "caption": "..."}`` with ``source/7.<ext>`` (control)
   and ``target/7.<ext>`` (image) (MindONE's openpose layout): an image with several captions is a sample per caption;
3. ``metadata.jsonl`` with ``file_name`` (the image), a control-image column (``conditioning_image_column``;
   unset: the first of ``conditioning_image``, ``conditioning_image_file_name``, ``control_file_name``,
   ``control_image`` a line has) and the caption column (``caption_column``, else ``text`` or ``caption``), as
   diffusers' train_controlnet.py names them;
4. ``images/`` and ``controls/`` (or ``conditioning_images/``) sub-folders, matched by the path below them without
   the extension; the caption of ``images/x.png`` is ``images/x.txt`` (``caption_extension``), else ``x.txt`` in the
   folder itself;
5. with a detector (``detector canny``) no control images are needed: any layout above (their control images are
   not read) or any text-to-image layout of ``ldm.data.sources`` (img_txt.csv, metadata.jsonl, caption files).

Checks, each one line (UserError) before any model is built: a control image missing for an image, an image or
control image that cannot be decoded, a control image of another aspect ratio than its image (W/H beyond 1%);
one of the same aspect ratio but another size is resized to the image's size (Lanczos) with one notice counting
them. Images below the filter size are skipped as in text-to-image training (``filter_small_size``).

A sample: the image and its control image resized to cover the training size (bicubic and Lanczos), the same crop
(centre, or random with ``random_crop``) and the same flip, the image in [-1, 1] and the control image as the
hint a ControlNet reads (RGB in [0, 1], (3, H, W)); with a detector the hint is made from the cropped image (canny
edges as 3 equal channels, what ``controlnet_image2image.py --detector canny`` feeds at inference).
"""
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ldm.data.dataset import ImageCaptionDataset, image_info, replace_skipped, sample_rng, to_rgb
from ldm.data.sources import _is_image
from ldm.errors import UserError
from ldm.io.images import same_aspect
from ldm.io.text import read_utf8

_log = logging.getLogger("ldm.data")

PROMPT_JSON = "prompt.json"
JSONL_NAME = "metadata.jsonl"
CONTROL_COLUMNS = ("conditioning_image", "conditioning_image_file_name", "control_file_name", "control_image")
CONTROL_FOLDERS = ("controls", "conditioning_images")


@dataclass
class ControlRecord:
    path: str                 # the image (what the model learns to draw)
    text: str                 # its caption
    control: str = None       # its control image; None when a detector makes the control from the image


@dataclass
class ControlOptions:
    detector: str = "none"            # "none": control images from the layout; "canny": edges of the image
    canny_low: float = 100.0
    canny_high: float = 200.0
    canny_sigma: float = 0.0
    control_column: str = ""          # metadata.jsonl key of the control image ("" = CONTROL_COLUMNS)


# ------------------------------------------------------------------ listing
def _inside(folder, rel, where, key):
    """``folder``/``rel`` for a relative path that stays inside ``folder`` (else one UserError)."""
    if not isinstance(rel, str) or not rel.strip():
        raise UserError(f'{where}: "{key}" must be a non-empty string, got {rel!r}')
    if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise UserError(f'{where}: "{key}" {rel!r} is not a path inside {folder}')
    return os.path.join(folder, rel)


def _json_object(line, where):
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a JSON {type(obj).__name__}, expected an object")
    return obj


def _read_prompt_json(folder):
    """MindONE's prompt.json: JSON lines of source/target/prompt (canny), or one array of image_id/caption
    (openpose, with source/ and target/ folders)."""
    path = os.path.join(folder, PROMPT_JSON)
    text = read_utf8(path, "prompt file")
    if text.lstrip().startswith("["):
        return _read_openpose(folder, path, text)
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        obj = _json_object(line, where)
        missing = [k for k in ("source", "target", "prompt") if k not in obj]
        if missing:
            keys, names = ", ".join(obj) or "none", ", ".join(repr(k) for k in missing)
            raise UserError(f"{where}: no {names} key (it has: {keys}; MindONE's layout is "
                            '{"source": "source/0.png", "target": "target/0.png", "prompt": ...})')
        if not isinstance(obj["prompt"], str):
            raise UserError(f'{where}: "prompt" is a JSON {type(obj["prompt"]).__name__}, expected a string')
        records.append(ControlRecord(_inside(folder, obj["target"], where, "target"), obj["prompt"],
                                     _inside(folder, obj["source"], where, "source")))
    if not records:
        raise UserError(f"{path} holds no records")
    return records


def _by_stem(folder):
    """{file name without extension: path} of the images directly in ``folder``."""
    if not os.path.isdir(folder):
        return {}
    return {os.path.splitext(n)[0]: os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if _is_image(n)}


def _read_openpose(folder, path, text):
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    targets = _by_stem(os.path.join(folder, "target"))
    if not targets:
        raise UserError(f"{path} is MindONE's openpose layout (a JSON array) but {os.path.join(folder, 'target')} "
                        "holds no images")
    sources = _by_stem(os.path.join(folder, "source"))
    captions = {}
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "image_id" not in item or not isinstance(item.get("caption"), str):
            raise UserError(f'{path} entry {k}: expected {{"image_id": ..., "caption": "..."}}, got {item!r}'[:300])
        captions.setdefault(str(item["image_id"]), []).append(item["caption"])
    records = []
    for stem, image in targets.items():
        key = str(int(stem)) if stem.isdigit() else stem     # MindONE matches int(name) to image_id
        control = sources.get(stem) or os.path.join(folder, "source", os.path.basename(image))
        records += [ControlRecord(image, caption, control) for caption in captions.get(key, [])]
    if not records:
        raise UserError(f"{path}: no caption's image_id names an image in {os.path.join(folder, 'target')}")
    return records


def _read_metadata(folder, options, caption_column):
    path = os.path.join(folder, JSONL_NAME)
    records = []
    for number, line in enumerate(read_utf8(path, "metadata file").split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        obj = _json_object(line, where)
        image = obj.get("file_name", obj.get("image"))
        if image is None:
            raise UserError(f'{where}: no "file_name" key (it has: {", ".join(obj) or "none"})')
        columns = (options.control_column,) if options.control_column else CONTROL_COLUMNS
        key = next((c for c in columns if obj.get(c) is not None), None)
        control = None
        if key is not None:
            control = _inside(folder, obj[key], where, key)
        elif options.detector == "none":
            raise UserError(f"{where}: no control image (looked for {', '.join(repr(c) for c in columns)}; it has: "
                            f"{', '.join(obj) or 'none'}): add the control image's path, set "
                            "conditioning_image_column, or make the control with --detector canny")
        col = caption_column or ("text" if obj.get("text") is not None else "caption")
        text = obj.get(col)
        if not isinstance(text, str):
            raise UserError(f'{where}: no caption text under "{col}" (it has: {", ".join(obj) or "none"}): set '
                            "caption_column")
        records.append(ControlRecord(_inside(folder, image, where, "file_name"), text, control))
    if not records:
        raise UserError(f"{path} holds no records")
    return records


def _read_image_folders(folder, caption_extension):
    """images/ + controls/ (or conditioning_images/), matched by the path below them without the extension."""
    images_root = os.path.join(folder, "images")
    control_root = next((os.path.join(folder, c) for c in CONTROL_FOLDERS if os.path.isdir(os.path.join(folder, c))),
                        os.path.join(folder, CONTROL_FOLDERS[0]))
    controls = {}
    for root, dirs, files in os.walk(control_root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if _is_image(name):
                rel = os.path.relpath(os.path.join(root, name), control_root)
                controls[os.path.splitext(rel)[0]] = os.path.join(root, name)
    records = []
    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    for root, dirs, files in os.walk(images_root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not _is_image(name):
                continue
            path = os.path.join(root, name)
            stem = os.path.splitext(os.path.relpath(path, images_root))[0]
            caption = ""
            for candidate in (os.path.splitext(path)[0] + ext, os.path.join(folder, stem + ext)):
                if os.path.isfile(candidate):
                    caption = next((ln.strip() for ln in read_utf8(candidate, "caption file").splitlines()
                                    if ln.strip()), "")
                    break
            control = controls.get(stem, os.path.join(control_root, os.path.relpath(path, images_root)))
            records.append(ControlRecord(path, caption, control))
    if not records:
        raise UserError(f"no images in {images_root}")
    return records


def read_control_folder(folder, options, caption_extension=".txt", caption_column="", source_options=None):
    """(records, layout name) of one data folder (see the module docstring)."""
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is not a folder"
        raise UserError(f"data_path {folder} {what}: give a folder of images and control images")
    if os.path.isfile(os.path.join(folder, PROMPT_JSON)):
        records, layout = _read_prompt_json(folder), "prompt.json"
    elif os.path.isfile(os.path.join(folder, JSONL_NAME)):
        records, layout = _read_metadata(folder, options, caption_column), JSONL_NAME
    elif os.path.isdir(os.path.join(folder, "images")):
        records, layout = _read_image_folders(folder, caption_extension), "images/ + controls/"
    elif options.detector != "none":
        from ldm.data.sources import read_source
        listing = read_source(folder, source_options)
        return [ControlRecord(r.path, r.text) for r in listing.records], listing.kind
    else:
        raise UserError(f"data_path {folder}: no control images (looked for {PROMPT_JSON} (MindONE), {JSONL_NAME} with "
                        f"a conditioning_image column, images/ + controls/ folders); give them, or make the control "
                        "from each image with --detector canny")
    if options.detector != "none":         # the detector makes the control: the listed control images are unused
        _log.info("%s: detector %s makes the control images; the %s layout's own are not read", folder,
                  options.detector, layout)
        records = [ControlRecord(r.path, r.text) for r in records]
    return records, layout


def check_records(records, min_size):
    """(kept records, their sizes, skipped counts): every control image exists, decodes and has its image's
    aspect ratio (one UserError naming both files otherwise); images below ``min_size`` are skipped (counted),
    an image that cannot be decoded is one UserError (its control image would be unused)."""
    kept, sizes, skipped, resized = [], [], {}, 0
    seen = {}
    for rec in records:
        if rec.path not in seen:
            seen[rec.path] = image_info(rec.path, min_size)
        reason, size = seen[rec.path]
        if reason in ("missing", "corrupt or truncated", "too large to decode"):
            raise UserError(f"image {rec.path}: {'not found' if reason == 'missing' else reason}")
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if rec.control is not None:
            c_reason, c_size = image_info(rec.control, 0)
            if c_reason == "missing":
                raise UserError(f"image {rec.path} has no control image: {rec.control} not found")
            if c_reason:
                raise UserError(f"control image {rec.control}: {c_reason}")
            if c_size != size:
                if not same_aspect(c_size, size):
                    raise UserError(f"control image {rec.control} is {c_size[0]}x{c_size[1]}, its image {rec.path} "
                                    f"{size[0]}x{size[1]}: another aspect ratio (W/H {c_size[0] / c_size[1]:.3f} vs "
                                    f"{size[0] / size[1]:.3f}); crop one to the other")
                resized += 1
        kept.append(rec)
        sizes.append(size)
    if not kept:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        raise UserError(f"no usable images ({len(records)} listed: {detail}; too small = shorter side < {min_size} "
                        "px): lower image_filter_size or set filter_small_size False")
    if skipped:
        _log.warning("skipped %d of %d images (%s; shorter side < %d px)", sum(skipped.values()), len(records),
                     ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())), min_size)
    if resized:
        _log.info("%d control image(s) of another size than their image (same aspect ratio) are resized to the "
                  "image's size (Lanczos)", resized)
    return kept, sizes, skipped


# ------------------------------------------------------------------ loading
def _open_rgb(path):
    with Image.open(path) as img:
        return to_rgb(ImageOps.exif_transpose(img))


def crop_box(width, height, target, rng=None, random_crop=False):
    """(resized (w, h), (left, top)) of an image of ``width`` x ``height`` covering ``target`` (w, h), as
    ldm.data.dataset.load_image draws it (random offsets from ``rng`` with ``random_crop``)."""
    tw, th = target
    scale = max(tw / width, th / height)
    nw, nh = max(tw, round(width * scale)), max(th, round(height * scale))
    if random_crop and rng is not None:
        left, top = int(rng.integers(0, nw - tw + 1)), int(rng.integers(0, nh - th + 1))
    else:
        left, top = (nw - tw) // 2, (nh - th) // 2
    return (nw, nh), (left, top)


def load_pair(record, size, options, rng=None, random_crop=False, random_flip=False):
    """(image float32 (3, H, W) in [-1, 1], hint float32 (3, H, W) in [0, 1]) of ``record`` at ``size`` (w, h):
    one crop and one flip for both (see the module docstring)."""
    tw, th = size
    image = _open_rgb(record.path)
    (nw, nh), (left, top) = crop_box(image.width, image.height, (tw, th), rng, random_crop)
    flip = bool(rng.random() < 0.5) if (random_flip and rng is not None) else False
    box = (left, top, left + tw, top + th)
    pixels = np.asarray(image.resize((nw, nh), Image.BICUBIC).crop(box), dtype=np.uint8)
    if flip:
        pixels = pixels[:, ::-1]
    if options.detector == "canny":
        from ldm.data.canny import canny
        edges = canny(np.ascontiguousarray(pixels), options.canny_low, options.canny_high, options.canny_sigma)
        control = np.repeat(edges[..., None], 3, axis=-1)
    else:
        ctrl = _open_rgb(record.control)
        if ctrl.size != image.size:
            ctrl = ctrl.resize(image.size, Image.LANCZOS)
        control = np.asarray(ctrl.resize((nw, nh), Image.LANCZOS).crop(box), dtype=np.uint8)
        if flip:
            control = control[:, ::-1]
    image_out = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / 127.5 - 1.0
    hint = np.ascontiguousarray(control.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return image_out, hint


class ControlNetDataset(ImageCaptionDataset):
    """ImageCaptionDataset (captions, buckets, subsets, the per-sample draws) whose records carry a control image;
    ``sample`` adds ``hint`` (3, H, W) in [0, 1], ``hint_of(index, size)`` is the hint without randomness (the
    validation loss's)."""

    def __init__(self, folders, image_size, control_options=None, random_crop=False, random_flip=False, min_size=0,
                 drop_text_prob=0.0, seed=42, filter_small=False, replace_skipped_images=False, source_options=None,
                 caption_options=None, buckets=None):
        if isinstance(folders, str):
            folders = [folders]
        self.folders = list(folders)
        self.image_size = int(image_size)
        self.random_crop, self.random_flip = random_crop, random_flip
        self.drop_text_prob = float(drop_text_prob)
        self.caption_options = caption_options
        self.seed = int(seed)
        self.control_options = control_options or ControlOptions()
        ext = getattr(source_options, "caption_extension", ".txt") or ".txt"
        column = getattr(source_options, "caption_column", "") or ""
        listed, self.layouts = [], []
        for folder in self.folders:
            records, layout = read_control_folder(folder, self.control_options, ext, column, source_options)
            listed += records
            self.layouts.append(layout)
        threshold = (min_size or self.image_size // 2) if filter_small else 0
        self.records, sizes, self.skipped = check_records(listed, threshold)
        kept = len(self.records)
        if replace_skipped_images:
            self.records, sizes = replace_skipped(self.records, sum(self.skipped.values()), sizes)
        self.replaced = len(self.records) - kept
        self.set_buckets(buckets, sizes)

    def sample(self, index, epoch, num_timesteps, latent_shape, copy=0):
        rng = sample_rng(self.seed, epoch, index, copy)
        rec = self.records[index]
        image, hint = load_pair(rec, self.size_of(index), self.control_options, rng, self.random_crop,
                                self.random_flip)
        return dict(image=image, hint=hint, **self.draws(rng, rec.text, num_timesteps, latent_shape, epoch))

    def hint_of(self, index, size):
        """The hint of record ``index`` at ``size`` (w, h), centre crop, no flip."""
        return load_pair(self.records[index], size, self.control_options)[1]


__all__ = ["ControlNetDataset", "ControlOptions", "ControlRecord", "check_records", "load_pair",
           "read_control_folder"]
