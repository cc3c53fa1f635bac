"""Image-caption folders (MindONE layout: images + ``img_txt.csv`` with columns ``dir,text``).

Reading is plain numpy/PIL on the host, and every random choice for one sample (crop, flip, caption
dropout, timestep, noise) comes from a generator seeded by ``(seed, epoch, sample index)``. So the
data a sample contributes does not depend on the batch size, the number of ranks, or where a run was
resumed: two ranks with batch B see exactly what one process with batch 2B sees, and a resumed run
replays the same numbers as an uninterrupted one.

Small and unreadable images follow MindONE's ``filter_small_size`` / ``image_filter_size`` /
``replace_small_images`` (its ``ldm/data/dataset.py``): an image counts as small when its shorter side
is below the threshold; each skipped one is counted (one warning), and with replacement the dataset
is topped back up to the listed size with copies of kept records, in MindONE's order.
"""
import csv
import io
import logging
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ldm.errors import UserError

CSV_NAME = "img_txt.csv"
REQUIRED_COLUMNS = ("dir", "text")
_log = logging.getLogger(__name__)


@dataclass
class Record:
    path: str
    text: str


def _decode_csv(path):
    """The CSV's text; bytes that are not UTF-8 are one error naming the file and line (a BOM is fine)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}): save the CSV "
                        f"as UTF-8") from exc


def _read_csv(folder):
    """(dir, text) rows of ``folder``/img_txt.csv. A row with more or fewer fields than the header is an
    error naming its line: pandas.read_csv (MindONE's reader) refuses too many fields but silently fills
    too few with NaN, which would train on the caption "nan"; here both are refused, so a stray comma in
    an unquoted caption is found instead of shifting columns."""
    path = os.path.join(folder, CSV_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: data_path must be a folder with images and {CSV_NAME}")
    reader = csv.DictReader(io.StringIO(_decode_csv(path), newline=""))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise UserError(f"{path} lacks column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'none'}; "
                            f"expected a header 'dir,text')")
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                extra = row.get(None) or []
                got = len(columns) + len(extra) if extra else sum(v is not None for v in row.values())
                raise UserError(f"{path} line {reader.line_num}: {got} field(s), the header has {len(columns)} "
                                f"(quote captions that hold commas)")
            row = {(k or "").strip(): v for k, v in row.items()}
            rows.append((row["dir"] or "", row["text"] or ""))
    except csv.Error as exc:
        raise UserError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from exc
    return rows


def to_rgb(img):
    """Any PIL mode as RGB; transparent pixels (RGBA, LA, PA, P with a transparency entry) are composited
    on white, as a viewer shows them, instead of keeping whatever colour sits under alpha 0."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _check_image(path, min_size):
    """Return None if usable, else the reason it is skipped. The image is decoded in full (``load``):
    ``verify`` passes a truncated JPEG that then fails at its first batch."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with Image.open(path) as img:
            img.load()
            to_rgb(img)
            size = img.size
    except Image.DecompressionBombError:
        return "too large to decode"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return "corrupt or truncated"
    if min(size) < min_size:
        return "too small"
    return None


def scan_folders(folders, min_size):
    """Records of every usable image in ``folders``; one warning counts the skipped ones by reason
    (or, when none is usable, one error that holds the counts)."""
    records, skipped, total = [], {}, 0
    for folder in folders:
        for rel, text in _read_csv(folder):
            total += 1
            path = os.path.join(folder, rel)
            reason = _check_image(path, min_size)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                records.append(Record(path, text))
    detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    small = f"; too small = shorter side < {min_size} px" if "too small" in skipped else ""
    if not records:
        hint = (f"; lower image_filter_size or set filter_small_size False") if "too small" in skipped else ""
        listed = f"{total} listed in {CSV_NAME}" + (f": {detail}{small}" if skipped else "")
        raise UserError(f"no usable images in {', '.join(folders)} ({listed}{hint})")
    if skipped:
        _log.warning("skipped %d of %d images (%s%s)", sum(skipped.values()), total, detail, small)
    return records, skipped


def replace_skipped(records, num_skipped):
    """MindONE's replacement: for ``n`` skipped images append copies of kept records ``n, n-1, ..., 1``
    (indices wrap around when fewer than ``n + 1`` images were kept, where MindONE would fail)."""
    kept = list(records)
    extra = [kept[k % len(kept)] for k in range(num_skipped, 0, -1)]
    if extra:
        _log.info("replaced %d skipped image(s) with copies of kept ones: %d samples per epoch",
                  len(extra), len(kept) + len(extra))
    return kept + extra


def sample_rng(seed, epoch, index):
    """The one generator for everything random about sample ``index`` in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def load_image(path, size, rng=None, random_crop=False, random_flip=False):
    """Resize the shorter side to ``size`` (bicubic), crop ``size`` x ``size`` (center, or random with
    ``rng``), optionally flip; return float32 (3, size, size) in [-1, 1]."""
    with Image.open(path) as img:
        img = to_rgb(img)
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        if random_crop and rng is not None:
            left = int(rng.integers(0, nw - size + 1))
            top = int(rng.integers(0, nh - size + 1))
        else:
            left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
        arr = np.asarray(img, dtype=np.float32)
    flip = bool(rng.random() < 0.5) if (random_flip and rng is not None) else False
    if flip:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1)) / 127.5 - 1.0


class ImageCaptionDataset:
    """Usable (image, caption) records of one or more folders; ``sample(index, epoch)`` gives one
    transformed example plus that sample's random draws for the diffusion loss."""

    def __init__(self, folders, image_size, random_crop=False, random_flip=False, min_size=0,
                 drop_text_prob=0.0, seed=42, filter_small=True, replace_skipped_images=False):
        """``min_size``: shorter-side threshold (0 = image_size // 2) when ``filter_small``; without it
        small images are kept (upscaled) and only unreadable ones are skipped.
        ``replace_skipped_images``: MindONE's replace_small_images (see :func:`replace_skipped`)."""
        if isinstance(folders, str):
            folders = [folders]
        self.folders = list(folders)
        self.image_size = int(image_size)
        self.random_crop = random_crop
        self.random_flip = random_flip
        self.drop_text_prob = float(drop_text_prob)
        self.seed = int(seed)
        threshold = (min_size or self.image_size // 2) if filter_small else 0
        self.records, self.skipped = scan_folders(self.folders, threshold)
        kept = len(self.records)
        if replace_skipped_images:
            self.records = replace_skipped(self.records, sum(self.skipped.values()))
        self.replaced = len(self.records) - kept

    def __len__(self):
        return len(self.records)

    def sample(self, index, epoch, num_timesteps, latent_shape):
        """Dict with image (3,H,W), text (caption or "" when dropped), t, noise, offset_noise, vae_noise."""
        rng = sample_rng(self.seed, epoch, index)
        rec = self.records[index]
        image = load_image(rec.path, self.image_size, rng, self.random_crop, self.random_flip)
        return dict(image=image, **self.draws(rng, rec.text, num_timesteps, latent_shape))

    def draws(self, rng, text, num_timesteps, latent_shape):
        drop = rng.random() < self.drop_text_prob
        return dict(
            text="" if drop else text,
            dropped=drop,
            t=np.int32(rng.integers(0, num_timesteps)),
            noise=rng.standard_normal(latent_shape).astype(np.float32),
            offset_noise=rng.standard_normal((latent_shape[0], 1, 1)).astype(np.float32),
            vae_noise=rng.standard_normal(latent_shape).astype(np.float32),
        )


def epoch_order(num_items, epoch, seed):
    """The shared shuffled order of one epoch (same on every rank)."""
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(num_items)


def steps_per_epoch(num_items, batch_size, world_size=1):
    return num_items // (batch_size * world_size)


def shard_indices(num_items, epoch, seed, batch_size, step, rank=0, world_size=1):
    """Indices of ``rank``'s micro-batch ``step`` of ``epoch``: the global batch ``step`` of the shared
    order is cut into ``world_size`` consecutive slices, so ranks see disjoint samples and their union
    is what one process with batch ``batch_size * world_size`` sees."""
    order = epoch_order(num_items, epoch, seed)
    start = step * batch_size * world_size + rank * batch_size
    return order[start:start + batch_size]


def make_batch(dataset, indices, epoch, num_timesteps, latent_shape):
    """Stack ``dataset.sample`` for ``indices``: arrays keyed like a sample, ``text`` a list."""
    samples = [dataset.sample(int(i), epoch, num_timesteps, latent_shape) for i in indices]
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0] if k not in ("text", "dropped")}
    batch["text"] = [s["text"] for s in samples]
    batch["index"] = np.asarray(indices, dtype=np.int64)
    return batch
