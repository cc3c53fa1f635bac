"""Atomic file writes: the data goes to a temporary name in the target's folder, then ``os.replace``,
so a run killed at any moment leaves the old file or the new one, never half of one. The result gets
the permissions ``open()`` would give (0666 minus the umask), not mkstemp's 0600 (or MindSpore's 0400).
"""
import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, leftovers=None):
    """Yield a temporary path beside ``path`` (same extension, which MindSpore's writer needs); when
    the block ends without an error it replaces ``path``. Whatever happens, the temporary file and
    the names ``leftovers(tmp)`` lists (a writer's own temporary files) are gone afterwards."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        for name in [tmp] + list(leftovers(tmp) if leftovers else []):
            if os.path.exists(name):
                os.remove(name)
