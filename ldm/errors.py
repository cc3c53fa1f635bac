"""One exception type for problems the user can fix, and the CLI wrapper that prints it in one line.

Library code raises :class:`UserError` (or a subclass) with a message that says what is wrong and,
where possible, how to fix it. CLIs wrap their ``main`` with :func:`run_cli`, so a user sees one
line on stderr and a non-zero exit instead of a traceback.
"""
import contextlib
import logging
import sys


class UserError(Exception):
    """Bad input that the user can fix: missing file, wrong shape, config/checkpoint mismatch, ..."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, or does not fit the model built from the config."""


EXIT_USER_ERROR = 2


def _close_progress_bars():
    """Close live tqdm bars so the error line starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        bar.close()


def _fail(message, code):
    _close_progress_bars()
    print(message, file=sys.stderr)
    sys.exit(code)


def run_cli(main, argv=None):
    """Call ``main(argv)``; turn UserError, any OSError (missing file, read-only or full disk, a file
    where a folder belongs, ...) and KeyboardInterrupt into one stderr line and an exit code."""
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "msd-vpred"
    try:
        code = main(argv)
    except UserError as exc:
        _fail(f"{prog}: error: {' '.join(str(exc).split())}", EXIT_USER_ERROR)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{prog}: error: {exc.strerror or exc}{where}", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        _fail(f"{prog}: interrupted", 130)
    sys.exit(code or 0)


@contextlib.contextmanager
def refusals_first():
    """Hold every log record while the block runs (a run's checks and loading); log them when it
    succeeds, drop them when it raises. A refusal is then the only line, even where a notice was
    already due before it (a MindONE flag notice, a skipped-images count)."""
    held = []

    def hold(record):
        if all(r is not record for r in held):      # one record reaches every handler on its way
            held.append(record)
        return False

    handlers = set(logging.getLogger().handlers)
    for item in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(item, logging.Logger):
            handlers.update(item.handlers)
    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
    for record in held:
        logging.getLogger(record.name).handle(record)
