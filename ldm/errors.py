"""One exception type for problems the user can fix, and the CLI wrapper that prints it in one line.

Library code raises :class:`UserError` (or a subclass) with a message that says what is wrong and,
where possible, how to fix it. CLIs wrap their ``main`` with :func:`run_cli`, so a user sees one
line on stderr and a non-zero exit instead of a traceback.
"""
import sys


class UserError(Exception):
    """Bad input that the user can fix: missing file, wrong shape, config/checkpoint mismatch, ..."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, or does not fit the model built from the config."""


EXIT_USER_ERROR = 2


def run_cli(main, argv=None):
    """Call ``main(argv)``; turn UserError/OSError/KeyboardInterrupt into one stderr line + exit code."""
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "msd-vpred"
    try:
        code = main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"{prog}: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
