"""Checking the declaration's options: every mistake is one line naming the file, the option and the fix.

A typo in a column name or an option key would otherwise surface as a ``KeyError`` deep in
preprocessing, or be ignored silently and train on garbage. These helpers refuse unknown keys,
report missing ones and name the closest existing column. Row numbers in messages are 0-based
data rows of the named file (the header line not counted).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mtlrec.data.schema import SchemaError


def _columns_hint(columns: Sequence[object], limit: int = 15) -> str:
    shown = ", ".join(map(str, list(columns)[:limit]))
    return shown + (f", … (+{len(columns) - limit} more)" if len(columns) > limit else "")


def checked_column(frame: pd.DataFrame, column: object, option: str, where: str) -> str:
    """``column`` if ``frame`` has it, else the error naming the option, the file and the closest name."""
    if column in frame.columns:
        return column  # type: ignore[return-value]
    names = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(str(column), names, n=1) or [
        c for c in names if c.lower() == str(column).lower()
    ]
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SchemaError(f"{option}: column {column!r} is not in {where}; {hint}columns: {_columns_hint(names)}")


def checked_options(given: Mapping | None, defaults: Mapping[str, Any], option: str) -> dict[str, Any]:
    """``defaults`` updated with ``given``, refusing a key the defaults do not have (a typo would
    otherwise be ignored silently)."""
    if given is not None and not isinstance(given, Mapping):
        raise SchemaError(f"{option}: expected a mapping with keys {', '.join(defaults)}, got {given!r}")
    given = dict(given or {})
    no_unknown_keys(given, defaults, option)
    return {**defaults, **given}


def no_unknown_keys(given: Mapping, valid: Sequence[str] | Mapping, option: str) -> None:
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise SchemaError(f"{option}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")


def checked_entry(given: object, valid: Sequence[str], required: Sequence[str], option: str) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise SchemaError(f"{option}: expected a mapping with keys {', '.join(valid)}, got {given!r}")
    no_unknown_keys(given, valid, option)
    lacking = [k for k in required if given.get(k) is None]
    if lacking:
        raise SchemaError(f"{option}: missing key(s) {lacking}; valid keys: {', '.join(valid)}")
    return dict(given)
