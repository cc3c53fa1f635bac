"""Argument checks shared by the evaluation / dataset / conversion CLIs, so a bad flag is one line and
exit 2 before any work starts (docs/training.md, docs/txt2img.md: "one clear line on stderr, exit code 2").

* :class:`OneLineParser`: argparse's usage block + error becomes one :class:`UserError` line.
* ``positive_int`` / ``positive_float`` / ``fraction``: argparse ``type=`` callables that refuse
  NaN, inf and values where the number is meaningless (a batch of 0 images, a size of -3).
* :func:`output_file` / :func:`output_folder`: an output path that cannot be written (a regular
  file where a folder belongs, a folder where a file belongs) is refused up front, instead of an
  OSError half-way through a run.
* :func:`model_files`: the (config, checkpoint) pair of the generation CLIs (text_to_image.py, inpaint.py,
  controlnet_image2image.py), relative --config paths resolved against the repository as MindONE does.
"""
import argparse
import math
import os

from ldm.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes become one UserError line (run_cli prints it, exit 2), not a usage block."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1 (counts, sizes, batch sizes)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text):
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def fraction(text):
    """A finite number in [0, 1] (a bound on a fraction of images)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _first_non_folder_above(path):
    """The nearest existing ancestor of ``path`` that is not a folder (a file used as a folder), or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def output_folder(path, flag):
    """Refuse an output folder that is a regular file or lies below one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder: give a folder (existing or new)")
    blocker = _first_non_folder_above(path)
    if blocker:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder")
    return path


def output_file(path, flag):
    """Refuse an output file whose path is a folder or lies below a regular file."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder: give a file name")
    blocker = _first_non_folder_above(path)
    if blocker:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder")
    return path


def write_text_atomic(path, text, newline=None):
    """Write a result file (JSON, CSV, Markdown) so that a full disk or a kill leaves the old file or
    none, never a truncated one that looks complete."""
    from ldm.io.atomic import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
    return path


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_relative(path):
    """``path`` as given if it exists (or is absolute), else relative to the repository (MindONE resolves a
    relative --config against its script's folder)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(REPO, path)
    return candidate if os.path.exists(candidate) else path


def model_files(config, ckpt, default_config, default_ckpt, config_beside=True):
    """(config, checkpoint) of a generation CLI from its --config / --ckpt_path (None: not given) and its
    version's defaults (repository paths), both checked to exist. With ``config_beside`` and no --config, a
    model_config.yaml that our training saved beside the checkpoint is the config (it states the spec the
    checkpoint was trained with)."""
    ckpt_path = ckpt or os.path.join(REPO, default_ckpt)
    if config:
        config_path = repo_relative(config)
    else:
        beside = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "model_config.yaml")
        use_beside = config_beside and ckpt and os.path.isfile(beside)
        config_path = beside if use_beside else os.path.join(REPO, default_config)
    if not os.path.isfile(config_path):
        raise UserError(f"config file not found: {config_path}")
    if not os.path.exists(ckpt_path):
        raise UserError(f"checkpoint not found: {ckpt_path} (give --ckpt_path)")
    return config_path, ckpt_path
