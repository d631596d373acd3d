"""How error messages show what they quote: every bad-input error is one line, and a cell value
reads as the user would type it. Shared by the column transformers, the label encoders, the
tabular loader and ``mtlrec-train``'s one-line error."""

from __future__ import annotations

import numpy as np


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def shown(value: object) -> str:
    """A cell value as a user would type it (``6``, not numpy's ``np.int64(6)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)
