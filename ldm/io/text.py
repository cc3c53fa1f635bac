"""The one reader of text inputs (captions, metadata, CSVs, templates, prompt files, recipes and configs,
JSON beside weights): UTF-8, a BOM allowed; anything else is one UserError line naming the file, the line
and the byte, instead of a UnicodeDecodeError."""
from ldm.errors import UserError

UTF8_FIX = "save it as UTF-8"


def not_utf8(path, line, byte, fix=UTF8_FIX):
    """The one message for bytes that are not UTF-8 (line counted from 1)."""
    return UserError(f"{path} line {line} is not UTF-8 text (byte 0x{byte:02x}): {fix}")


def read_utf8(path, what="file", fix=UTF8_FIX):
    """The text of ``path``; ``what`` names it in the message of an unreadable file, ``fix`` ends the
    message of bytes that are not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError as exc:
        raise UserError(f"{what} {path} is a folder, not a file") from exc
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, data[:exc.start].count(b"\n") + 1, data[exc.start], fix) from exc


def utf8_lines(path, fix=UTF8_FIX):
    """Yield ``(line number, text)`` of ``path`` one line at a time (a 10 000-line prompt file is never
    held at once), with read_utf8's message for bytes that are not UTF-8; a BOM on line 1 is dropped."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(path, number, raw[exc.start], fix) from exc
