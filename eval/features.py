"""Inception features of an image folder, batched with a progress bar and cached per folder.

The cache is an ``.npz`` named by a hash of the folder's image files (names and bytes) and of the
weights file, so evaluating many generated folders against one real folder extracts the real
features once, and any change to the images or the weights misses the cache.
"""
import hashlib
import os
import warnings

import numpy as np
from tqdm import tqdm

from eval.images import list_images, load_unit_images

CACHE_VERSION = "fid-v1"


def _file_digest(path, chunk=1 << 20, limit=None):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        read = 0
        while limit is None or read < limit:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            read += len(block)
    return h.hexdigest()


def weights_key(path):
    """Identity of a weights file: size + hash of its first and last MiB (cheap for 100 MB files)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def folder_key(paths):
    """Hash of the image files (name + content): the cache key of a folder."""
    h = hashlib.sha1(CACHE_VERSION.encode())
    for p in paths:
        h.update(os.path.basename(p).encode())
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]


def iter_feature_batches(paths, extractor, batch_size, desc="features"):
    """Yield (paths, features (B, D)) per batch; images of different sizes are resized one by one."""
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = load_unit_images(chunk)
            if len({im.shape for im in images}) == 1:
                feats = extractor(np.stack(images))
            else:
                feats = np.concatenate([extractor(im[None]) for im in images])
            bar.update(len(chunk))
            yield chunk, feats


def folder_features(folder, extractor, weights_path, batch_size=50, cache_dir=None, use_cache=True):
    """(N, 2048) float32 features of every image in ``folder``; returns dict(features, paths, cache, cached).

    ``cache_dir`` defaults to ``<folder>/.fid_cache``; an unwritable cache only warns.
    """
    paths = list_images(folder)
    cache_path = None
    if use_cache:
        cache_dir = cache_dir or os.path.join(folder, ".fid_cache")
        key = f"{folder_key(paths)}-{weights_key(weights_path)}"
        cache_path = os.path.join(cache_dir, f"inception2048-{key}.npz")
        if os.path.isfile(cache_path):
            with np.load(cache_path) as data:
                return {"features": data["features"], "paths": paths, "cache": cache_path, "cached": True}
    feats = np.concatenate([f for _, f in iter_feature_batches(paths, extractor, batch_size,
                                                                desc=os.path.basename(folder.rstrip("/")))])
    if cache_path:
        try:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = cache_path + f".tmp{os.getpid()}.npz"
            np.savez(tmp, features=feats)
            os.replace(tmp, cache_path)  # a crash never leaves a half-written cache behind
        except OSError as exc:
            warnings.warn(f"could not write feature cache {cache_path}: {exc}")
            cache_path = None
    return {"features": feats, "paths": paths, "cache": cache_path, "cached": False}
