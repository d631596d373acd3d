"""Atomic file writes for report outputs (text tables and rendered figures).

A report is often regenerated while someone has the old one open, or interrupted half-way; a
temporary sibling file plus ``os.replace`` means readers see the old file or the new one, never
a truncated mix. (JSON goes through :func:`mtlrec.training.results.write_json_atomic`.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text (``\\n`` line ends, as given) atomically."""
    data = text.encode("utf-8")
    return write_with(path, lambda fh: fh.write(data))
