"""Image-caption folders (MindONE layout: images + ``img_txt.csv`` with columns ``dir,text``).

What a ``data_path`` folder holds is read by ldm.data.sources (MindONE's CSV, caption files,
metadata.jsonl, kohya repeat folders); with ``buckets`` every image trains at the bucket of its
aspect ratio (ldm.data.buckets) instead of a centre square.

Reading is plain numpy/PIL on the host, and every random choice for one sample (crop, flip, caption
dropout and shuffle, timestep, noise) comes from a generator seeded by ``(seed, epoch, sample index)``. So the
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
from PIL import Image, ImageOps, UnidentifiedImageError

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
    from ldm.io.text import read_utf8
    return read_utf8(path, "CSV", "save the CSV as UTF-8")


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


_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)      # EXIF orientations that swap width and height


def image_info(path, min_size):
    """(reason it is skipped or None, (width, height) as shown, EXIF orientation applied). The image is
    decoded in full (``load``): ``verify`` passes a truncated JPEG that then fails at its first batch."""
    if not os.path.isfile(path):
        return "missing", None
    try:
        with Image.open(path) as img:
            img.load()
            to_rgb(img)
            w, h = img.size
            if img.getexif().get(0x0112) in _TRANSPOSED_ORIENTATIONS:
                w, h = h, w
    except Image.DecompressionBombError:
        return "too large to decode", None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return "corrupt or truncated", None
    if min(w, h) < min_size:
        return "too small", (w, h)
    return None, (w, h)


def _check_image(path, min_size):
    """None if usable, else the reason it is skipped (see :func:`image_info`)."""
    return image_info(path, min_size)[0]


def scan_folders(folders, min_size, source_options=None):
    """(records, skipped counts, sizes) of every usable image listed by ``folders`` (ldm.data.sources
    picks each folder's reader); one warning counts the skipped ones by reason (or, when none is
    usable, one error that holds the counts). An image listed several times (repeat folders) is
    decoded once."""
    from ldm.data.sources import read_sources
    listing = read_sources(folders, source_options)
    records, sizes, skipped, seen = [], [], {}, {}
    for rec in listing.records:
        if rec.path not in seen:
            seen[rec.path] = image_info(rec.path, min_size)
        reason, size = seen[rec.path]
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            records.append(rec)
            sizes.append(size)
    total = len(listing.records)
    detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    small = f"; too small = shorter side < {min_size} px" if "too small" in skipped else ""
    if not records:
        hint = (f"; lower image_filter_size or set filter_small_size False") if "too small" in skipped else ""
        where = CSV_NAME if listing.kind == "csv" else "the folder"
        listed = f"{total} listed in {where}" + (f": {detail}{small}" if skipped else "")
        raise UserError(f"no usable images in {', '.join(folders)} ({listed}{hint})")
    if skipped:
        _log.warning("skipped %d of %d images (%s%s)", sum(skipped.values()), total, detail, small)
    return records, skipped, sizes


def replace_skipped(records, num_skipped, sizes=None):
    """MindONE's replacement: for ``n`` skipped images append copies of kept records ``n, n-1, ..., 1``
    (indices wrap around when fewer than ``n + 1`` images were kept, where MindONE would fail).
    With ``sizes`` (one per record) returns (records, sizes) extended alike."""
    kept = list(records)
    picks = [k % len(kept) for k in range(num_skipped, 0, -1)]
    if picks:
        _log.info("replaced %d skipped image(s) with copies of kept ones: %d samples per epoch",
                  len(picks), len(kept) + len(picks))
    out = kept + [kept[k] for k in picks]
    if sizes is None:
        return out
    return out, list(sizes) + [sizes[k] for k in picks]


def sample_rng(seed, epoch, index, copy=0, stream=()):
    """The one generator for everything random about sample ``index`` in ``epoch``; ``copy`` > 0 for a
    repeat of the sample within one epoch (a bucket's last batch filled up), which draws anew;
    ``stream``: key words of another stream of the same sample (DreamBooth's class partner)."""
    key = [int(seed), int(epoch), int(index)] + [int(w) for w in stream] + ([int(copy)] if copy else [])
    return np.random.default_rng(key)


def as_size(size):
    """(width, height) from an int (square) or a pair."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def load_image(path, size, rng=None, random_crop=False, random_flip=False):
    """Apply the EXIF orientation, resize (bicubic) to cover ``size`` (an int for a square, or (width,
    height) of a bucket), crop it (center, or random with ``rng``), optionally flip; return float32
    (3, height, width) in [-1, 1]."""
    tw, th = as_size(size)
    with Image.open(path) as img:
        img = to_rgb(ImageOps.exif_transpose(img))
        w, h = img.size
        scale = max(tw / w, th / h)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        if random_crop and rng is not None:
            left = int(rng.integers(0, nw - tw + 1))
            top = int(rng.integers(0, nh - th + 1))
        else:
            left, top = (nw - tw) // 2, (nh - th) // 2
        img = img.crop((left, top, left + tw, top + th))
        arr = np.asarray(img, dtype=np.float32)
    flip = bool(rng.random() < 0.5) if (random_flip and rng is not None) else False
    if flip:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1)) / 127.5 - 1.0


class ImageCaptionDataset:
    """Usable (image, caption) records of one or more folders; ``sample(index, epoch)`` gives one
    transformed example plus that sample's random draws for the diffusion loss."""

    caption_options = None       # subclasses that build their own captions leave these unset
    bucket_of = None

    def __init__(self, folders, image_size, random_crop=False, random_flip=False, min_size=0,
                 drop_text_prob=0.0, seed=42, filter_small=True, replace_skipped_images=False,
                 source_options=None, caption_options=None, buckets=None):
        """``min_size``: shorter-side threshold (0 = image_size // 2) when ``filter_small``; without it
        small images are kept (upscaled) and only unreadable ones are skipped.
        ``replace_skipped_images``: MindONE's replace_small_images (see :func:`replace_skipped`).
        ``source_options`` (ldm.data.sources.SourceOptions): caption files, metadata.jsonl column.
        ``caption_options`` (ldm.data.captions.CaptionOptions): kohya's caption shuffle/dropout options.
        ``buckets`` (ldm.data.buckets.BucketSettings): aspect-ratio buckets instead of squares."""
        if isinstance(folders, str):
            folders = [folders]
        self.folders = list(folders)
        self.image_size = int(image_size)
        self.random_crop = random_crop
        self.random_flip = random_flip
        self.drop_text_prob = float(drop_text_prob)
        self.caption_options = caption_options
        self.seed = int(seed)
        threshold = (min_size or self.image_size // 2) if filter_small else 0
        self.records, self.skipped, sizes = scan_folders(self.folders, threshold, source_options)
        kept = len(self.records)
        if replace_skipped_images:
            self.records, sizes = replace_skipped(self.records, sum(self.skipped.values()), sizes)
        self.replaced = len(self.records) - kept
        self.set_buckets(buckets, sizes)

    def set_buckets(self, settings, sizes):
        """Assign every record its bucket (``self.bucket_of``), or None without bucketing."""
        self.bucket_settings = settings
        self.bucket_of = None
        if settings is not None:
            from ldm.data.buckets import assign_buckets
            self.bucket_of = assign_buckets(sizes, [r.path for r in self.records], settings)

    def size_of(self, index):
        """(width, height) sample ``index`` trains at."""
        return self.bucket_of[index] if self.bucket_of is not None else (self.image_size, self.image_size)

    def indices_by_size(self):
        """[(size, [indices])] in size order: what can be stacked into one batch."""
        groups = {}
        for i in range(len(self)):
            groups.setdefault(self.size_of(i), []).append(i)
        return sorted(groups.items())

    def subset(self, indices):
        """A copy holding only the records ``indices`` (a validation split)."""
        import copy
        part = copy.copy(self)
        part.records = [self.records[i] for i in indices]
        if self.bucket_of is not None:
            part.bucket_of = [self.bucket_of[i] for i in indices]
        return part

    def __len__(self):
        return len(self.records)

    def sample(self, index, epoch, num_timesteps, latent_shape, copy=0):
        """Dict with image (3,H,W), text (caption or "" when dropped), t, noise, offset_noise, vae_noise, aux_seed.
        The image is cropped to the record's bucket (or the square image_size); ``latent_shape`` must
        be the latents of that size."""
        rng = sample_rng(self.seed, epoch, index, copy)
        rec = self.records[index]
        image = load_image(rec.path, self.size_of(index), rng, self.random_crop, self.random_flip)
        return dict(image=image, **self.draws(rng, rec.text, num_timesteps, latent_shape, epoch))

    def caption(self, rng, text, epoch):
        """(caption, dropped): MindONE's drop_text_prob draw, then kohya's options when set (their
        shuffle and tag dropout draw from a child of ``rng``, so the sample's other draws are the same
        with and without them)."""
        u = rng.random()
        opts = self.caption_options
        if opts is None or not opts.active():
            drop = u < self.drop_text_prob
            return ("" if drop else text), drop
        from ldm.data.captions import process_caption
        return process_caption(text, opts, epoch, u, rng.spawn(1)[0])

    def draws(self, rng, text, num_timesteps, latent_shape, epoch=0):
        """The sample's caption and random draws. ``num_timesteps``: T (t uniform in [0, T)) or a pair (low,
        high) (t uniform in [low, high): kohya's min_timestep / max_timestep; (0, T) draws what T draws).
        ``aux_seed``, drawn last so every earlier draw stays as it was, seeds the extra noise of kohya's
        objective options (ldm.train.objective_options)."""
        low, high = (0, num_timesteps) if np.ndim(num_timesteps) == 0 else num_timesteps
        text, drop = self.caption(rng, text, epoch)
        return dict(
            text=text,
            dropped=drop,
            t=np.int32(rng.integers(int(low), int(high))),
            noise=rng.standard_normal(latent_shape).astype(np.float32),
            offset_noise=rng.standard_normal((latent_shape[0], 1, 1)).astype(np.float32),
            vae_noise=rng.standard_normal(latent_shape).astype(np.float32),
            aux_seed=rng.integers(0, 2 ** 63, dtype=np.int64),
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


class SquareBatches:
    """The batch plan without buckets: :func:`shard_indices` of the shuffled order, the square size;
    the same interface as ldm.data.buckets.BucketBatches."""

    def __init__(self, num_items, image_size, global_batch, seed):
        self.num_items, self.size, self.seed = num_items, (int(image_size), int(image_size)), int(seed)
        self.global_batch = int(global_batch)
        self.batches_per_epoch = steps_per_epoch(num_items, self.global_batch)
        self.resolutions = [self.size]

    def micro_batch(self, epoch, step, batch_size, rank=0):
        world = self.global_batch // batch_size
        idx = shard_indices(self.num_items, epoch, self.seed, batch_size, step, rank, world)
        return self.size, idx, np.zeros(len(idx), np.int64)


def batch_plan(dataset, batch_size, world_size, seed):
    """BucketBatches when the dataset has buckets, else SquareBatches (global batch = batch x ranks)."""
    global_batch = batch_size * world_size
    if getattr(dataset, "bucket_of", None) is not None:
        from ldm.data.buckets import BucketBatches
        return BucketBatches(dataset.bucket_of, global_batch, seed)
    return SquareBatches(len(dataset), dataset.image_size, global_batch, seed)


def make_batch(dataset, indices, epoch, num_timesteps, latent_shape, copies=None):
    """Stack ``dataset.sample`` for ``indices`` (``copies``: repeat numbers, default 0): arrays keyed like
    a sample, ``text`` a list."""
    copies = np.zeros(len(indices), np.int64) if copies is None else copies
    samples = [dataset.sample(int(i), epoch, num_timesteps, latent_shape, copy=int(c))
               for i, c in zip(indices, copies)]
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0] if k not in ("text", "dropped")}
    batch["text"] = [s["text"] for s in samples]
    batch["dropped"] = np.asarray([s["dropped"] for s in samples], dtype=bool)
    batch["index"] = np.asarray(indices, dtype=np.int64)
    return batch
