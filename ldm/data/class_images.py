"""Prior-preservation class images: top ``class_data_dir`` up to ``num_class_images`` with images the
base model draws for ``class_prompt`` (MindONE's ``generate_class_images``).

Image ``k`` is written as ``{k:05d}.png`` (MindONE's names) from seed ``seed + k``, through a temporary
file and a rename, so a killed run leaves only complete images and a rerun generates only the missing
names, each exactly as an uninterrupted run would have. Names already taken (the user's own images or
earlier runs) are skipped, never overwritten. The sampling function is handed in (the caller builds it
from the text-to-image pipeline), so this module never imports ldm.pipeline.
"""
import logging
import os
import time

from ldm.data.dreambooth_dataset import list_images
from ldm.errors import UserError
from ldm.io.images import save_png_atomic

_log = logging.getLogger("ldm.train")


MAX_CLASS_IMAGES = 100_000   # class images are named 00000.png ... 99999.png


def class_images_short(folder, target):
    """How many images ``folder`` lacks to hold ``target`` (counted, not listed)."""
    return max(0, int(target) - len(list_images(folder)))


def missing_class_images(folder, target):
    """``[(k, path)]`` of the images to generate so that ``folder`` holds ``target`` images."""
    have = list_images(folder)
    need = int(target) - len(have)
    taken = {n.lower() for n in have}
    plan, k = [], 0
    while len(plan) < need:
        name = f"{k:05d}.png"
        if name not in taken and not os.path.exists(os.path.join(folder, name)):
            plan.append((k, os.path.join(folder, name)))
        k += 1
    return plan


def fill_class_images(folder, prompt, target, sample_fn, image_size, steps, sampler, scale, seed, batch_size=4,
                      show_progress=True, log=True):
    """Generate the missing class images (see the module docstring); returns the paths written.

    ``sample_fn(prompts, width, height, steps, sampler, scale, seeds, negative_prompt) -> uint8 (N, H, W, 3)``.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"class_data_dir is not a folder: {folder}")
    plan = missing_class_images(folder, target)
    if not plan:
        return []
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError(f"class_data_dir {folder} cannot be created: {exc.strerror or exc}") from exc
    if log:
        _log.info("generating %d class images for %r into %s (%s, %d steps, scale %g)", len(plan), prompt, folder,
                  sampler, steps, scale)
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=len(plan), desc="class images", dynamic_ncols=True)
    start, written = time.perf_counter(), []
    try:
        size = min(max(int(batch_size), 1), len(plan))
        for first in range(0, len(plan), size):
            chunk = plan[first:first + size]
            seeds = [int(seed) + k for k, _ in chunk]
            seeds += seeds[-1:] * (size - len(seeds))   # a short last batch is padded: one compiled shape
            images = sample_fn([prompt] * size, width=image_size, height=image_size, steps=steps,
                               sampler=sampler, scale=scale, seeds=seeds, negative_prompt="")
            for image, (_, path) in zip(images, chunk):
                try:
                    save_png_atomic(image, path)
                except OSError as exc:
                    raise UserError(f"cannot write class image {path}: {exc.strerror or exc}") from exc
                written.append(path)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if log:
        _log.info("generated %d class images in %.1f s", len(written), time.perf_counter() - start)
    return written
