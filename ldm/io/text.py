"""The one reader of small text inputs (captions, metadata, CSVs): UTF-8, a BOM allowed; anything else
is one UserError line naming the file, the line and the byte, instead of a UnicodeDecodeError."""
from ldm.errors import UserError


def read_utf8(path, what="file", fix="save it as UTF-8"):
    """The text of ``path``; ``what`` names it in the message of an unreadable file, ``fix`` ends the
    message of bytes that are not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}): {fix}") from exc
