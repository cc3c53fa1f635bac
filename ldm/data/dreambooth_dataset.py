"""DreamBooth data (MindONE's ``ldm/data/dataset_db.py``): the instance images of one subject, all
captioned with ``instance_prompt`` and repeated ``train_data_repeats`` times per epoch, and, with prior
preservation, a class image captioned with ``class_prompt`` paired with every instance sample.

MindONE's item ``i`` is (instance image ``i``, instance prompt, a class image picked at random, class
prompt) and its model adds the two losses, ``loss = instance loss + prior_loss_weight * class loss``
(LatentDiffusionDreamBooth). Here the class half of a batch is drawn from its own generator keyed by
``(seed, epoch, instance index)``, so a resumed or data-parallel run pairs every instance sample with
the same class image, timestep and noise as one uninterrupted process; :func:`paired_batch` stacks the
two halves into one batch whose per-sample loss weights give exactly MindONE's sum.
"""
import os

import numpy as np

from ldm.data.dataset import ImageCaptionDataset, Record, load_image, make_batch, replace_skipped, sample_rng
from ldm.data.ti_dataset import IMAGE_EXTENSIONS, scan_images

CLASS_STREAM = 0xC1A55   # fourth key word of the class half's generator (the instance half uses three)


def list_images(folder):
    """Names of the image files directly in ``folder`` (sorted; what counts towards num_class_images)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


class DreamBoothDataset(ImageCaptionDataset):
    """``len = instance images x repeats`` (MindONE's list repetition: a, b, c, a, b, c, ...); sample ``i``
    is instance image ``i % images`` with ``instance_prompt``. ``prior`` holds the class images once
    :meth:`attach_class_images` has been called (after any missing ones were generated)."""

    def __init__(self, instance_dir, instance_prompt, image_size, repeats=1, random_crop=False,
                 random_flip=False, min_size=0, seed=42, filter_small=False, replace_skipped_images=False,
                 buckets=None):
        self.image_size = int(image_size)
        self.random_crop, self.random_flip = random_crop, random_flip
        self.drop_text_prob = 0.0            # every instance caption holds the identifier
        self.seed = int(seed)
        self.filter_threshold = (min_size or self.image_size // 2) if filter_small else 0
        images, skipped, sizes = scan_images(instance_dir, self.filter_threshold, "instance_data_dir")
        if replace_skipped_images:
            images, sizes = replace_skipped(images, skipped, sizes)
        self.images = [Record(r.path, instance_prompt) for r in images]
        self.repeats = max(int(repeats), 1)
        self.records = self.images * self.repeats
        self.set_buckets(buckets, sizes * self.repeats)
        self.prior = None

    def attach_class_images(self, class_dir, class_prompt):
        self.prior = ClassImages(class_dir, class_prompt, self.image_size, self.random_crop, self.random_flip,
                                 self.filter_threshold, self.seed)
        self.prior.instance_sizes = self.size_of
        return self.prior


class ClassImages(ImageCaptionDataset):
    """The class images of prior preservation; ``sample(i, epoch)`` is the class partner of instance
    sample ``i``: an image picked uniformly (as MindONE's ``random.choice``) by that sample's class
    generator, captioned with ``class_prompt``, with its own timestep and noise, cropped to the size
    (bucket) of its instance sample."""

    def __init__(self, folder, prompt, image_size, random_crop=False, random_flip=False, min_size=0, seed=42):
        self.image_size = int(image_size)
        self.random_crop, self.random_flip = random_crop, random_flip
        self.drop_text_prob = 0.0
        self.seed = int(seed)
        self.prompt = prompt
        self.records, _, _ = scan_images(folder, min_size, "class_data_dir")
        self.instance_sizes = None

    def sample(self, index, epoch, num_timesteps, latent_shape, copy=0):
        rng = sample_rng(self.seed, epoch, index, copy, stream=(CLASS_STREAM,))
        rec = self.records[int(rng.integers(0, len(self.records)))]
        size = self.instance_sizes(index) if self.instance_sizes is not None else self.image_size
        image = load_image(rec.path, size, rng, self.random_crop, self.random_flip)
        return dict(image=image, **self.draws(rng, self.prompt, num_timesteps, latent_shape))


def paired_batch(dataset, indices, epoch, num_timesteps, latent_shape, prior_loss_weight=1.0, copies=None):
    """The instance samples ``indices`` and, with a prior attached and a non-zero weight, their class
    partners after them (2N rows). ``loss_weight`` (2N,) makes the objective's batch mean
    ``(1/2N) * (2 * sum_inst + 2w * sum_class) = mean_inst + w * mean_class``, MindONE's loss; without
    the class half the batch is the plain instance batch (loss = mean_inst, as MindONE's weight 0)."""
    batch = make_batch(dataset, indices, epoch, num_timesteps, latent_shape, copies)
    if dataset.prior is None or not prior_loss_weight:
        return batch
    prior = make_batch(dataset.prior, indices, epoch, num_timesteps, latent_shape, copies)
    n = len(batch["text"])
    out = {k: np.concatenate([batch[k], prior[k]]) for k in batch if k != "text"}
    out["text"] = batch["text"] + prior["text"]
    out["loss_weight"] = np.concatenate([np.full(n, 2.0), np.full(n, 2.0 * float(prior_loss_weight))]
                                        ).astype(np.float32)
    return out
