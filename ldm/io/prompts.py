"""Prompt sources for generation runs, streamed so a 10 000-line prompt file is never held at once."""
import os

from ldm.errors import UserError
from ldm.io.text import utf8_lines


def iter_prompt_file(path, keep_blank=False):
    """Yield the non-blank lines of a UTF-8 prompt file (stripped), one at a time (``keep_blank``: the
    blank ones too, as "", for files paired line by line); bytes that are not UTF-8 are one UserError
    naming the file and line."""
    for _, line in utf8_lines(path):
        line = line.strip()
        if line or keep_blank:
            yield line


def check_prompt_file(path):
    """Refuse a missing or prompt-less file up front (one line), before any model is built."""
    if not os.path.isfile(path):
        raise UserError(f"prompt file not found: {path}")
    for _ in iter_prompt_file(path):
        return
    raise UserError(f"prompt file {path} holds no prompts (it is empty or only blank lines)")


def iter_batches(prompts, batch_size):
    """Group an iterable of prompts into lists of at most ``batch_size`` (the last may be shorter)."""
    batch = []
    for p in prompts:
        batch.append(p)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
