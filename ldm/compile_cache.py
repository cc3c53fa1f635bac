"""MindSpore's compile cache for text_to_image.py and the training scripts: an identical later run loads
its compiled graphs from disk instead of compiling them again (2 CPU cores, 2026-12-02, bench/
bench_compile_cache.py: tiny txt2img first image 7.1 s -> 1.0 s with identical PNGs, tiny training first
step 13.6 s -> 1.6 s with identical losses and weights; MindSpore still runs its backend on a cached
graph, so the SD 2.x-size training first step only went 158 s -> 95 s).

What MindSpore 2.8's cache does NOT notice (measured here): a network rebuilt with another structure
from the same code (a net without biases silently reused the graph of the one with them), and a run
that compiles a different set of graphs into the same folder (txt2img, then img2img: the VAE-encoder
call failed to compile against the cached graphs; DreamBooth drawing its class images, then not: the
step's inputs were bound to the wrong graph). And it binds the parameters of a cached *closure*
wrongly (a training step compiled as ``ms.jit`` of a function gave NaN losses, its updates went
nowhere), so compiled training steps are bound methods of a Cell (ldm.train.trainer.TrainStep).
Hence each run gets a folder of its own, named by a digest of everything that decides which graphs
compile in which order: the tool, every setting but the output folder, stamps of the files read, the
MindSpore version and the library's source. ``rm -r`` the root to reclaim the space. MindSpore reads
the setting when it sets up its compiler, so call :func:`enable` before any graph is built.
"""
import hashlib
import importlib.metadata
import json
import logging
import os

logger = logging.getLogger(__name__)
LIBRARY = os.path.dirname(os.path.abspath(__file__))
OFF = ("", "off", "none", "false", "0")


def source_digest():
    """sha256 over the library's Python files (paths and contents)."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(LIBRARY)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, LIBRARY).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def file_stamp(path):
    """``[absolute path, size, mtime]`` of an existing file (a changed input file changes the cache
    key); anything else (None, "", a folder, a missing path) as it is."""
    if isinstance(path, str) and path and os.path.isfile(path):
        return [os.path.abspath(path), os.path.getsize(path), os.path.getmtime(path)]
    return path


def cache_folder(root, tool, *keys):
    """``root/<tool>-<digest>``: the digest covers ``keys`` (JSON-able values), MindSpore's version and
    the library source."""
    digest = hashlib.sha256()
    for part in (tool, importlib.metadata.version("mindspore"), source_digest()) + keys:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return os.path.join(root, f"{tool}-{digest.hexdigest()[:20]}")


def enable(root, tool, *keys):
    """Point MindSpore's compile cache at this run's folder (before the first graph is compiled).
    Returns the folder, or None when ``root`` says off or the folder cannot be made (then the run
    simply compiles, with one warning)."""
    if root is None or str(root).strip().lower() in OFF:
        return None
    folder = cache_folder(os.path.expanduser(str(root)), tool, *keys)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        logger.warning("compile cache off: cannot use %s (%s)", folder, exc.strerror or exc)
        return None
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = folder
    logger.debug("compile cache: %s", folder)
    return folder
