"""Side tables (users, items, ...) joined onto the interactions.

A retailer's export often keeps user and item attributes in their own files. The join is a left
join that keeps one row per interaction, in file order, so it can neither drop nor duplicate
interactions: a side table with a key on two rows, or an interaction whose key it lacks, is an
error naming both files. Each side table is read once, however many split files join it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.data.messages import shown
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular.files import locate, read_table
from mtlrec.data.tabular.options import checked_column, checked_entry

JOIN_KEYS = ("path", "key", "reader", "columns", "download")


def read_side_tables(joins: Sequence | None, root: str | None) -> list[dict[str, Any]]:
    """Each side table read once (every split file is joined with the same tables)."""
    if joins is not None and not isinstance(joins, Sequence):
        raise SchemaError(f"data.joins: expected a list of {{path, key, ...}} entries, got {joins!r}")
    out = []
    for i, given in enumerate(joins or []):
        option = f"data.joins[{i}]"
        if isinstance(given, Mapping) and True in given:
            raise SchemaError(f"{option}: write the join column as `key: ...`; YAML reads a bare `on:` as true")
        spec = checked_entry(given, JOIN_KEYS, ("path", "key"), option)
        left, right = _join_keys(spec["key"], f"{option}.key")
        path = locate(spec["path"], root, f"{option}.path", spec.get("download"))
        frame = read_table(path, spec.get("reader"), f"{option}.reader")
        checked_column(frame, right, f"{option}.key", str(path))
        columns = list(spec.get("columns") or [c for c in frame.columns if c != right])
        for c in columns:
            checked_column(frame, c, f"{option}.columns", str(path))
        out.append({"option": option, "path": path, "frame": frame, "left": left, "right": right, "columns": columns})
    return out


def _join_keys(key: object, option: str) -> tuple[str, str]:
    """(interaction column, side-table column): one name for both, or ``{left: ..., right: ...}``."""
    if isinstance(key, Mapping):
        checked_entry(key, ("left", "right"), ("left", "right"), option)
        return key["left"], key["right"]
    return key, key  # type: ignore[return-value]


def join(frame: pd.DataFrame, where: str, side: Mapping[str, Any]) -> pd.DataFrame:
    """Left join keeping one row per interaction, in order; every key must be in the side table."""
    option, path, table, right = side["option"], side["path"], side["frame"], side["right"]
    left = checked_column(frame, side["left"], f"{option}.key", where)
    clash = [c for c in side["columns"] if c in frame.columns]
    if clash:
        raise SchemaError(
            f"{option}: column(s) {clash} of {path} are also in {where}; list the side columns to bring with "
            f"{option}.columns (or rename them with {option}.reader.rename)"
        )
    keys = pd.Index(table[right])
    if not keys.is_unique:
        dup = keys[keys.duplicated()]
        raise SchemaError(
            f"{option}: {path} has {len(dup.unique())} key(s) in column {right!r} on more than one row (first: "
            f"{shown(dup[0])}), so the join would duplicate interactions; keep one row per key in {path}"
        )
    positions = keys.get_indexer(frame[left])
    _check_keys_found(frame[left], positions, where, side)
    joined = table[side["columns"]].iloc[positions].set_axis(frame.index)  # keep the file's row numbers
    return pd.concat([frame, joined], axis=1)


def _check_keys_found(values: pd.Series, positions: np.ndarray, where: str, side: Mapping[str, Any]) -> None:
    missing = positions < 0
    if not missing.any():
        return
    first = int(np.flatnonzero(missing)[0])
    types = side["frame"][side["right"]].dtype
    type_note = f" (key types differ: {values.dtype} vs {types})" if values.dtype != types else ""
    raise SchemaError(
        f"{side['option']}: {values[missing].nunique(dropna=False)} key value(s) of column {values.name!r} in "
        f"{where} ({int(missing.sum())} rows) are missing from column {side['right']!r} of {side['path']}"
        f"{type_note}, first {shown(values.iloc[first])} at row {first}; add them to {side['path']}, drop those "
        f"interactions, or fix {side['option']}.key"
    )
