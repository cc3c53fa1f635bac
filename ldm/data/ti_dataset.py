"""Textual-inversion data: a folder of images (no captions, MindONE's ``train_data_dir``), each shown
``repeats`` times per epoch with a caption drawn from the object or style templates, the placeholder
(all its tokens, space-joined) put in for ``{}``.

The templates are the textual-inversion paper's small ImageNet prompt sets, which MindONE's
``dataset_textual_inversion.py`` and diffusers' ``textual_inversion.py`` both use. Every random choice
(template, crop, flip, timestep, noise) comes from the per-sample generator of ldm.data.dataset, so a
resumed or data-parallel run sees the same samples as one uninterrupted process.
"""
import logging
import os

from ldm.data.dataset import ImageCaptionDataset, Record, image_info, load_image, replace_skipped, sample_rng
from ldm.errors import UserError

_log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)
STYLE_TEMPLATES = (
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a cropped painting in the style of {}", "a good painting in the style of {}",
    "a close-up painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}",
    "a large painting in the style of {}",
)
TEMPLATES = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def read_template_file(path):
    """MindONE's ``template_file``: one template with ``{}`` per line (blank lines dropped)."""
    if not os.path.isfile(path):
        raise UserError(f"template_file not found: {path}")
    from ldm.io.text import read_utf8
    lines = [line.strip() for line in read_utf8(path, "template_file").splitlines()]
    lines = [line for line in lines if line]
    bad = [line for line in lines if "{}" not in line]
    if not lines or bad:
        raise UserError(f"template_file {path}: every line needs a '{{}}' for the placeholder"
                        + (f" (e.g. {bad[0]!r})" if bad else " (the file is empty)"))
    return tuple(lines)


def scan_images(folder, min_size, label="train_data_dir"):
    """(records (caption unused), skipped count, sizes) of the usable images directly in ``folder``,
    sorted by name; ``label`` names the folder's option in messages."""
    if not os.path.isdir(folder):
        raise UserError(f"{label} not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    records, skipped, sizes = [], 0, []
    for name in names:
        path = os.path.join(folder, name)
        reason, size = image_info(path, min_size)
        if reason:
            skipped += 1
        else:
            records.append(Record(path, ""))
            sizes.append(size)
    if not records:
        why = f"unreadable or shorter side < {min_size} px" if min_size else "unreadable"
        raise UserError(f"no usable images in {label} {folder} ({len(names)} image file(s), {skipped} "
                        f"skipped as {why})")
    if skipped:
        _log.warning("skipped %d of %d images in %s", skipped, len(names), folder)
    return records, skipped, sizes


class TextualInversionDataset(ImageCaptionDataset):
    """``len = images x repeats``; sample ``i`` is image ``i % images`` with a templated caption."""

    def __init__(self, folder, placeholder, image_size, learnable_property="object", templates=None, repeats=1,
                 random_crop=False, random_flip=False, min_size=0, seed=42, filter_small=True,
                 replace_skipped_images=True, buckets=None):
        if learnable_property not in TEMPLATES:
            raise UserError(f"learnable_property must be object or style, got {learnable_property!r}")
        self.placeholder = placeholder
        self.templates = tuple(templates) if templates else TEMPLATES[learnable_property]
        self.image_size = int(image_size)
        self.random_crop, self.random_flip = random_crop, random_flip
        self.drop_text_prob = 0.0            # every caption must hold the placeholder
        self.seed = int(seed)
        threshold = (min_size or self.image_size // 2) if filter_small else 0
        images, skipped, sizes = scan_images(folder, threshold)
        if replace_skipped_images:
            images, sizes = replace_skipped(images, skipped, sizes)
        self.images = images
        self.repeats = max(int(repeats), 1)
        self.records = [self.images[i % len(self.images)] for i in range(len(self.images) * self.repeats)]
        self.set_buckets(buckets, [sizes[i % len(sizes)] for i in range(len(self.records))])

    def template_caption(self, rng):
        return self.templates[int(rng.integers(0, len(self.templates)))].format(self.placeholder)

    def sample(self, index, epoch, num_timesteps, latent_shape, copy=0):
        rng = sample_rng(self.seed, epoch, index, copy)
        text = self.template_caption(rng)
        image = load_image(self.records[index].path, self.size_of(index), rng, self.random_crop, self.random_flip)
        return dict(image=image, **self.draws(rng, text, num_timesteps, latent_shape))
