"""Aspect-ratio buckets, with kohya-ss sd-scripts' rules and flag names.

A square crop of a portrait loses the head or the feet; bucketing instead trains every image at the
resolution of about ``image_size**2`` pixels whose aspect ratio is closest to its own:

* the bucket table (``enable_bucket``): for every width ``w`` from ``min_bucket_reso`` to
  ``max_bucket_reso`` in steps of ``bucket_reso_steps``, the height that keeps ``w * h`` within the area
  (in whole steps, capped at ``max_bucket_reso``), both orientations, plus the largest square;
* an image goes to the bucket of closest aspect ratio (its own size if that is a bucket), is resized to
  cover it and cropped (:func:`ldm.data.dataset.load_image`);
* ``bucket_no_upscale``: no table; an image larger than the area is scaled down to it (aspect kept, the
  side that rounds to a step with the smaller aspect error decides), its size is cut down to whole
  steps, and that is its bucket, so nothing is enlarged. kohya then ignores ``min_bucket_reso``; here an
  image whose bucket would be narrower than ``min_bucket_reso`` is refused (it is too small for every
  bucket the run allows).

Every batch comes from one bucket (:class:`BucketBatches`). Unlike kohya, the last batch of a bucket is
filled up with other images of the same bucket instead of being smaller: a smaller batch is another
input shape, i.e. another compiled graph.
"""
import math
from dataclasses import dataclass

import numpy as np

from ldm.errors import UserError

BUCKET_STREAM = 0xB0C4E7   # fourth key word of the bucket shuffle's generator


@dataclass(frozen=True)
class BucketSettings:
    image_size: int            # the base resolution: buckets hold about image_size**2 pixels
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64
    no_upscale: bool = False


def check_settings(settings, multiple):
    """Refuse bucket settings that leave no bucket or give shapes the model cannot take (one line)."""
    s = settings
    multiple = int(multiple or 1)
    if s.steps < multiple or s.steps % multiple:
        raise UserError(f"bucket_reso_steps {s.steps} must be a multiple of the model's size multiple {multiple} "
                        f"(every bucket side must be one)")
    for name, value in (("min_bucket_reso", s.min_reso), ("max_bucket_reso", s.max_reso)):
        if value < s.steps or value % s.steps:
            raise UserError(f"{name} {value} must be a positive multiple of bucket_reso_steps {s.steps}")
    if s.min_reso > s.max_reso:
        raise UserError(f"bucket settings leave no bucket: min_bucket_reso {s.min_reso} > max_bucket_reso {s.max_reso}")
    if not s.no_upscale and not s.min_reso <= s.image_size <= s.max_reso:
        raise UserError(f"image_size {s.image_size} must lie within [min_bucket_reso {s.min_reso}, max_bucket_reso "
                        f"{s.max_reso}]: it is the square bucket")


def bucket_resolutions(settings):
    """The sorted (width, height) table of ``settings`` (kohya's make_bucket_resolutions)."""
    s = settings
    area_steps = (s.image_size // s.steps) ** 2          # the area counted in steps x steps cells
    side = int(math.sqrt(area_steps)) * s.steps
    resos = {(side, side)}
    for width in range(s.min_reso, s.max_reso + 1, s.steps):
        height = min(s.max_reso, (area_steps // (width // s.steps)) * s.steps)
        resos.add((width, height))
        resos.add((height, width))
    return sorted(resos)


def _round_to_steps(x, steps):
    x = int(x + 0.5)
    return x - x % steps


def no_upscale_bucket(width, height, settings):
    """(bucket, resized size) of an image under bucket_no_upscale."""
    s = settings
    area = s.image_size * s.image_size
    aspect = width / height
    if width * height > area:
        rw = math.sqrt(area * aspect)
        rh = area / rw
        by_width = _round_to_steps(rw, s.steps)
        h_for_w = _round_to_steps(by_width / aspect, s.steps)
        by_height = _round_to_steps(rh, s.steps)
        w_for_h = _round_to_steps(by_height * aspect, s.steps)
        err_w = abs(by_width / h_for_w - aspect) if h_for_w else math.inf
        err_h = abs(w_for_h / by_height - aspect) if by_height else math.inf
        if err_w < err_h:
            resized = (by_width, int(by_width / aspect + 0.5))
        else:
            resized = (int(by_height * aspect + 0.5), by_height)
    else:
        resized = (width, height)
    return (resized[0] - resized[0] % s.steps, resized[1] - resized[1] % s.steps), resized


def select_bucket(width, height, table, settings):
    """The bucket (w, h) of an image of ``width`` x ``height``: its own size when that is in ``table``,
    else the one of closest aspect ratio (the first in table order on a tie); with no_upscale,
    :func:`no_upscale_bucket`."""
    if settings.no_upscale:
        return no_upscale_bucket(width, height, settings)[0]
    if (width, height) in table:
        return (width, height)
    ratios = np.array([w / h for w, h in table])
    return table[int(np.abs(ratios - width / height).argmin())]


def assign_buckets(sizes, paths, settings):
    """The bucket of every image (``sizes``: (w, h) as shown, EXIF orientation applied). With no_upscale
    an image too small for ``min_bucket_reso`` is one error naming it."""
    table = None if settings.no_upscale else bucket_resolutions(settings)
    buckets = []
    for (w, h), path in zip(sizes, paths):
        bucket = select_bucket(w, h, table, settings)
        if min(bucket) < settings.min_reso:
            raise UserError(f"{path} ({w}x{h}) is too small for every bucket with bucket_no_upscale (its bucket "
                            f"would be {bucket[0]}x{bucket[1]}, below min_bucket_reso {settings.min_reso}): "
                            f"remove it, lower min_bucket_reso, or turn bucket_no_upscale off")
        buckets.append(bucket)
    return buckets


def bucket_table_lines(buckets):
    """The start-up table: one line per bucket in use, 'WxH  images  aspect'."""
    counts = {}
    for b in buckets:
        counts[b] = counts.get(b, 0) + 1
    lines = [f"{'bucket':>11}  {'images':>6}  aspect"]
    for (w, h), n in sorted(counts.items(), key=lambda kv: kv[0][0] / kv[0][1]):
        lines.append(f"{w:>5}x{h:<5}  {n:>6}  {w / h:.3f}")
    return lines


class BucketBatches:
    """The global batches of every epoch, each from one bucket, the same on every rank.

    Per epoch (generator keyed by seed and epoch): each bucket's images are shuffled and cut into
    batches of ``global_batch``; a bucket's last batch is filled up from the start of its shuffled
    order (those repeats carry a copy number > 0 so they draw their own noise and timestep); then the
    batches of all buckets are shuffled together. The number of batches per epoch does not change
    between epochs (sum of ceil(images / global_batch) over buckets), so resume and data parallelism
    work as with square images: rank ``r`` takes slice ``r`` of each global batch.
    """

    def __init__(self, buckets, global_batch, seed):
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.members = {}
        for index, bucket in enumerate(buckets):
            self.members.setdefault(tuple(bucket), []).append(index)
        self.resolutions = sorted(self.members)
        self.batches_per_epoch = sum(math.ceil(len(m) / self.global_batch) for m in self.members.values())
        self._cached = (None, None)

    def epoch(self, epoch):
        """[(bucket, indices (G,), copies (G,))] of ``epoch`` in training order."""
        if self._cached[0] == epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, int(epoch), 0, BUCKET_STREAM])
        g = self.global_batch
        batches = []
        for bucket in self.resolutions:
            order = rng.permutation(np.asarray(self.members[bucket], dtype=np.int64))
            count = math.ceil(len(order) / g)
            slots = np.arange(count * g)
            indices = order[slots % len(order)]
            copies = slots // len(order)
            batches += [(bucket, indices[k * g:(k + 1) * g], copies[k * g:(k + 1) * g]) for k in range(count)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cached = (epoch, batches)
        return batches

    def micro_batch(self, epoch, step, batch_size, rank=0):
        """(bucket, indices, copies) of ``rank``'s slice of global batch ``step`` of ``epoch``."""
        bucket, indices, copies = self.epoch(epoch)[step]
        part = slice(rank * batch_size, (rank + 1) * batch_size)
        return bucket, indices[part], copies[part]
