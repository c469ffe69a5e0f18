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
