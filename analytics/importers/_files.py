"""Opening trace files: plain text or gzip, decoded as UTF-8."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


def open_text(path: Path) -> IO[str]:
    """Open `path` for reading text; `.gz` files are decompressed on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def read_text(path: Path) -> str:
    """The whole file (plain or `.gz`) as UTF-8 text. ImportFormatError names the line of a byte
    that is not UTF-8 (it was a bare UnicodeDecodeError), or a gzip stream that is broken."""
    from analytics.importers.columns import ImportFormatError  # (columns imports the readers)

    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:  # (gzip.BadGzipFile is an OSError)
        raise ImportFormatError(path, None, f"cannot read: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFormatError(
            path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})"
        ) from None
