"""The image + caption listing of one ``--data_path`` folder, read by what the folder holds.

Users arrive with data laid out for other trainers, so besides MindONE's ``img_txt.csv`` three common
layouts are read as they are, with no conversion step:

* ``metadata.jsonl``: Hugging Face ``imagefolder`` (one JSON object per line, ``file_name`` relative to
  the folder plus a caption column, ``text`` by default as in diffusers' training scripts);
* ``img.png`` + ``img.txt``: kohya-ss sd-scripts' caption files (``--caption_extension``);
* ``N_name`` sub-folders: kohya's DreamBooth-style repeat folders, each image listed ``N`` times.

Only listing happens here (pure Python, no image decoding): missing or corrupt images are returned and
filtered later by the dataset, as for the CSV.
"""
import json
import logging
import os
import re
from dataclasses import dataclass, field

from ldm.data.dataset import CSV_NAME, Record, _read_csv
from ldm.errors import UserError
from ldm.io.text import read_utf8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
JSONL_NAME = "metadata.jsonl"
REPEAT_FOLDER = re.compile(r"^(-?\d+)_(.+)$")
_log = logging.getLogger("ldm.data")


@dataclass
class SourceOptions:
    caption_extension: str = ".txt"     # kohya's --caption_extension; a value without the leading dot gets one
    caption_column: str = ""            # metadata.jsonl column; "" = "text" if the line has it, else "caption"
    require_captions: bool = False      # an image without a caption file is an error, not a counted warning


@dataclass
class Listing:
    records: list        # [Record(path, text)], repeat folders already expanded, in order
    kind: str            # "csv" | "jsonl" | "captions" | "repeats" (read_sources: also "mixed")
    missing_captions: int = 0     # images with no caption file (kept with caption "")
    details: list = field(default_factory=list)  # "repeats": [(subfolder path, repeats, images)]
    scanned: int = 0     # distinct images found by the caption-file reader (the missing_captions base)


def read_text_file(path, what="caption file"):
    """The text of a small UTF-8 file (a BOM is fine); unreadable or non-UTF-8 bytes are one UserError
    naming the file (and the line and byte)."""
    return read_utf8(path, what)


def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _caption_extension(options):
    ext = options.caption_extension.strip()
    if not ext:
        raise UserError("caption_extension is empty: give one such as .txt or .caption")
    return ext if ext.startswith(".") else "." + ext


def _first_line(text):
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _read_captions(folder, options, default_caption=None):
    """kohya layout: every image under ``folder`` (recursive, sorted, hidden entries and symlinked
    folders skipped), captioned by the first non-empty line of ``<stem><caption_extension>`` beside it;
    without one by ``default_caption`` (a repeat folder's name after ``N_``, as kohya's class tokens).
    A folder where no image has a caption is refused: training every image on the empty prompt is
    not what anyone means (a forgotten img_txt.csv looks like this)."""
    ext = _caption_extension(options)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, name) for name in files if _is_image(name)]
    if not found:
        raise UserError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, {CSV_NAME}, "
                        f"{JSONL_NAME}, N_name repeat folders)")
    records, missing = [], 0
    for path in sorted(found):
        caption_path = os.path.splitext(path)[0] + ext
        if os.path.isfile(caption_path):
            text = _first_line(read_text_file(caption_path))
        elif default_caption is not None:
            text = default_caption
        elif options.require_captions:
            raise UserError(f"{path} has no caption file (expected {caption_path}): write one, or unset "
                            f"require_captions to train it with an empty caption")
        else:
            text, missing = "", missing + 1
        records.append(Record(path, text))
    if missing == len(records):
        raise UserError(f"no captions in {folder}: {len(records)} image(s) but no {CSV_NAME}, {JSONL_NAME} or "
                        f"<name>{ext} caption files (write captions, set caption_extension, or name the folder "
                        f"N_caption as a kohya repeat folder)")
    return Listing(records, "captions", missing_captions=missing, scanned=len(records))


def _jsonl_record(folder, path, number, line, column):
    """One metadata.jsonl line as a Record; every problem is a UserError naming the line."""
    where = f"{path} line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}): write one JSON object per line") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a JSON {type(obj).__name__}, expected an object such as "
                        f'{{"file_name": "a.png", "text": "a caption"}}')
    keys = ", ".join(obj) or "none"
    name = obj.get("file_name")
    if name is None:
        raise UserError(f'{where}: no "file_name" key (it has: {keys})')
    if not isinstance(name, str) or not name.strip():
        raise UserError(f'{where}: "file_name" must be a non-empty string, got {name!r}')
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UserError(f'{where}: "file_name" {name!r} is absolute: give it relative to {folder}')
    if re.split(r"[/\\]", os.path.normpath(name))[0] == "..":
        raise UserError(f'{where}: "file_name" {name!r} leads out of {folder} with "..": keep images '
                        f"inside the folder that holds {JSONL_NAME}")
    col = column or ("text" if obj.get("text") is not None else "caption")
    text = obj.get(col)
    if text is None:
        wanted = f'"{column}"' if column else '"text" or "caption"'
        raise UserError(f"{where}: no caption under {wanted} (it has: {keys}): set caption_column to the "
                        f"caption's key")
    if not isinstance(text, str):
        raise UserError(f'{where}: caption "{col}" is a JSON {type(text).__name__}, expected a string')
    return Record(os.path.join(folder, name), text)


def _read_jsonl(folder, options):
    """Hugging Face imagefolder: ``metadata.jsonl`` lines ``{"file_name": ..., "<caption column>": ...}``."""
    path = os.path.join(folder, JSONL_NAME)
    lines = read_text_file(path, "metadata file").split("\n")
    records = [_jsonl_record(folder, path, n, line, options.caption_column)
               for n, line in enumerate(lines, 1) if line.strip()]
    if not records:
        raise UserError(f'{path} holds no records: write one line {{"file_name": ..., "text": ...}} per image')
    return Listing(records, "jsonl")


def _subfolders(folder):
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _read_repeats(folder, names, options):
    """kohya repeat folders ``N_name``: each read like a data folder, its records listed N times."""
    matched = [(name, REPEAT_FOLDER.match(name)) for name in names]
    ignored = [name for name, m in matched if not m]
    if ignored:
        _log.warning("%s: ignored %d sub-folder(s) not named like N_name repeat folders (%s)",
                     folder, len(ignored), ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else ""))
    listing = Listing([], "repeats")
    for name, m in matched:
        if not m:
            continue
        sub = os.path.join(folder, name)
        repeats = int(m.group(1))
        if repeats < 1:
            raise UserError(f"repeat folder {sub}: the count before '_' must be a whole number >= 1 "
                            f"(e.g. 1_{m.group(2)})")
        part = _read_folder(sub, options, allow_repeats=False, default_caption=m.group(2))
        listing.records += part.records * repeats
        listing.missing_captions += part.missing_captions
        listing.scanned += part.scanned
        listing.details.append((sub, repeats, len(part.records)))
    return listing


def _read_folder(folder, options, allow_repeats, default_caption=None):
    if os.path.isfile(os.path.join(folder, CSV_NAME)):
        return Listing([Record(os.path.join(folder, rel), text) for rel, text in _read_csv(folder)], "csv")
    if os.path.isfile(os.path.join(folder, JSONL_NAME)):
        return _read_jsonl(folder, options)
    if allow_repeats:
        names = _subfolders(folder)
        has_images = any(_is_image(n) and os.path.isfile(os.path.join(folder, n)) for n in os.listdir(folder))
        if not has_images and any(REPEAT_FOLDER.match(n) for n in names):
            return _read_repeats(folder, names, options)
    return _read_captions(folder, options, default_caption)


def read_source(folder, options=None):
    """The listing of one data folder, by the first layout that fits:

    1. ``img_txt.csv`` -> "csv" (MindONE; exactly ldm.data.dataset's reader);
    2. ``metadata.jsonl`` -> "jsonl" (Hugging Face imagefolder);
    3. ``N_name`` sub-folders and no images directly in ``folder`` -> "repeats" (kohya; each sub-folder
       read by rules 1, 2 or 4, nested repeat folders are plain caption folders; other sub-folders are
       ignored with a warning). Repeat folders next to images in ``folder`` itself are no repeat layout:
       everything is read by rule 4, recursively, once;
    4. otherwise "captions" (kohya ``img.png`` + ``img.txt``, recursive).
    """
    options = options or SourceOptions()
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is not a folder"
        raise UserError(f"data_path {folder} {what}: give a folder of images")
    return _read_folder(folder, options, allow_repeats=True)


def read_sources(folders, options=None):
    """Several data folders as one listing (records in the given order; kind "mixed" when kinds differ),
    with one warning that counts images trained without a caption file."""
    options = options or SourceOptions()
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    listings = [read_source(os.fspath(f), options) for f in folders]
    if not listings:
        raise UserError("no data_path given")
    kinds = {part.kind for part in listings}
    total = Listing([], kinds.pop() if len(kinds) == 1 else "mixed")
    for part in listings:
        total.records += part.records
        total.missing_captions += part.missing_captions
        total.scanned += part.scanned
        total.details += part.details
    if total.missing_captions:
        _log.warning("%d of %d images have no %s caption file: trained with an empty caption (set "
                     "require_captions to refuse)", total.missing_captions, total.scanned,
                     _caption_extension(options))
    return total
