"""The split rule: train/val/test by random shares, by a split column, by time, or one file each.

The options are checked before any file is read. Every split keeps each row's number in its file
(so a later error about a row points at the row to fix) and says which rule chose it; an empty
split is an error naming the fix. The split column goes to the schema as excluded, whose leakage
guard refuses it as a feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mtlrec.data.columns.categorical import category_keys
from mtlrec.data.messages import shown
from mtlrec.data.raw import SPLITS
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular.options import checked_column, checked_options

SPLIT_DEFAULTS: dict[str, Any] = {
    "kind": None, "ratios": [0.8, 0.1, 0.1], "seed": 0, "column": None,
    "values": {s: s for s in SPLITS}, "val_from": None, "test_from": None, "val_share": None,
}  # fmt: skip
SPLIT_KINDS = ("ratio", "column", "time", "files")


def split_options(given: Mapping | None, files: object) -> dict[str, Any]:
    opts = checked_options(given, SPLIT_DEFAULTS, "data.split")
    per_split = isinstance(files, Mapping)
    kind = opts["kind"] or ("files" if per_split else "ratio")
    if kind not in SPLIT_KINDS:
        raise SchemaError(f"data.split.kind: {kind!r} is not a split kind; use one of {', '.join(SPLIT_KINDS)}")
    if per_split != (kind == "files"):
        fix = "give data.files one file" if per_split else "give data.files as {train: ..., val: ..., test: ...}"
        raise SchemaError(f"data.split.kind: {kind!r} does not fit data.files={files!r}; {fix} or change the kind")
    if kind in ("column", "time") and not opts["column"]:
        what = "split name" if kind == "column" else "time"
        raise SchemaError(f"data.split.column: a {kind} split needs the column that holds the {what}")
    if kind not in ("column", "time") and opts["column"]:
        raise SchemaError(f"data.split.column only applies to column and time splits; set data.split.kind or remove it")
    cuts = [opts["val_from"] is not None, opts["test_from"] is not None]
    if any(cuts) and (kind != "time" or not all(cuts)):
        raise SchemaError("data.split.val_from/test_from: give both, and only with data.split.kind: time")
    _check_ratios(opts["ratios"])
    opts["values"] = _split_values(opts["values"])
    share = opts["val_share"]
    if share is not None:
        if kind != "files" or (isinstance(files, Mapping) and files.get("val")):
            raise SchemaError("data.split.val_share carves validation out of the train file: use it with "
                              "data.files = {train: ..., test: ...} (no val file)")
        if not isinstance(share, (int, float)) or not 0 < float(share) < 1:
            raise SchemaError(f"data.split.val_share: {share!r} must be a share of the train file in (0, 1), e.g. 0.1")
    return {**opts, "kind": kind}


def carved_to_validation(rows: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the train-file rows that go to validation: ``hash(seed, row number) < share``.

    A hash of each row's number in its file (SplitMix64) rather than a permutation, so the rule
    needs neither the row count nor all rows at once: a file read in chunks, out of core, splits
    exactly as the same file read whole, and a row's split never depends on the rows around it."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < float(share)


def _check_ratios(ratios: object) -> None:
    ok = isinstance(ratios, Sequence) and len(ratios) == 3
    try:
        ok = ok and all(float(r) >= 0 for r in ratios) and abs(sum(float(r) for r in ratios) - 1.0) < 1e-6
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SchemaError(
            f"data.split.ratios: {ratios!r} must be three non-negative shares (train, val, test) that sum to 1"
        )


def _split_values(given: object) -> dict[str, list[str]]:
    """Split -> the values of the split column that mean it (compared as text, ``1.0`` as ``1``)."""
    values = checked_options(given, {s: s for s in SPLITS}, "data.split.values")
    out = {s: [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for s, v in values.items()}
    seen = [x for v in out.values() for x in v]
    if len(set(seen)) != len(seen):
        raise SchemaError(f"data.split.values: {out} gives one value to two splits; give each split its own values")
    return out


def _split(frame: pd.DataFrame, where: str, opts: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, str]]:
    """Split -> (row positions in ``frame``, the rule that chose them)."""
    if opts["kind"] == "ratio":
        order = np.random.default_rng(int(opts["seed"])).permutation(len(frame))
        return _by_share(order, opts["ratios"], f"ratio split {_shares(opts['ratios'])} with seed {opts['seed']}")
    if opts["kind"] == "column":
        return _by_column(frame, where, opts)
    return _by_time(frame, where, opts)


def _shares(ratios: Sequence) -> str:
    return "/".join(f"{float(r):g}" for r in ratios)


def _by_share(
    order: np.ndarray, ratios: Sequence, rule: str, times: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, str]]:
    """Consecutive shares of ``order``. With ``times`` (sorted like ``order``), a cut never falls
    inside a run of equal times: rows of one moment all go to the earlier split, so no validation
    or test row shares its timestamp with a row of an earlier split."""
    cuts = np.round(np.cumsum([float(r) for r in ratios])[:2] * len(order)).astype(int)
    if times is not None:
        cuts = np.array([np.searchsorted(times, times[c - 1], side="right") if 0 < c < len(times) else c
                         for c in cuts])
    parts = np.split(order, cuts)
    return {s: (p, f"{rule}: the {s} part") for s, p in zip(SPLITS, parts)}


def _by_column(frame: pd.DataFrame, where: str, opts: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, str]]:
    column = checked_column(frame, opts["column"], "data.split.column", where)
    keys = category_keys(frame[column]).to_numpy(dtype=object)
    chosen = {s: np.isin(keys, v) for s, v in opts["values"].items()}
    unmatched = ~np.logical_or.reduce(list(chosen.values()))
    if unmatched.any():
        first = int(np.flatnonzero(unmatched)[0])
        raise SchemaError(
            f"data.split.values: {int(unmatched.sum())} row(s) of {where} hold a {column!r} value that is no split's "
            f"(first {shown(frame[column].iloc[first])} at row {frame.index[first]}); add it to data.split.values "
            f"{opts['values']} or drop those rows"
        )
    return {s: (np.flatnonzero(m), f"rows where {column} in {opts['values'][s]}") for s, m in chosen.items()}


def _by_time(frame: pd.DataFrame, where: str, opts: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, str]]:
    """Oldest rows train, newest test: a stable sort by time, then cut points or shares."""
    column = checked_column(frame, opts["column"], "data.split.column", where)
    times = _times(frame[column], where).reset_index(drop=True)  # positions, as the other rules give
    order = times.sort_values(kind="stable").index.to_numpy()
    if opts["val_from"] is None:
        return _by_share(order, opts["ratios"], f"time split on {column}, shares {_shares(opts['ratios'])}",
                         times=times.loc[order].to_numpy())
    val_from, test_from = (_cut(opts[k], times, k) for k in ("val_from", "test_from"))
    if val_from > test_from:
        raise SchemaError(
            f"data.split: val_from {opts['val_from']!r} is after test_from {opts['test_from']!r}; swap them"
        )
    t = times.loc[order]
    masks = {"train": t < val_from, "val": (t >= val_from) & (t < test_from), "test": t >= test_from}
    bounds = {"train": f"< {opts['val_from']}", "val": f"in [{opts['val_from']}, {opts['test_from']})",
              "test": f">= {opts['test_from']}"}  # fmt: skip
    return {s: (order[m.to_numpy()], f"rows where {column} {bounds[s]}") for s, m in masks.items()}


def _times(values: pd.Series, where: str) -> pd.Series:
    if ptypes.is_numeric_dtype(values.dtype) and not ptypes.is_bool_dtype(values.dtype):
        times = values.astype("float64")
    elif ptypes.is_datetime64_any_dtype(values.dtype):
        times = values
    else:
        times = pd.to_datetime(values, errors="coerce")
        if (times.isna() & values.notna()).any():  # dates written in more than one format
            times = pd.to_datetime(values, errors="coerce", format="mixed")
        bad = times.isna() & values.notna()
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(
                f"data.split.column: {values.name!r} in {where} holds {shown(values.iloc[first])} at row "
                f"{values.index[first]}, "
                f"neither a number nor a date; fix the cell or choose the timestamp column"
            )
    if times.isna().any():
        first = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise SchemaError(
            f"data.split.column: {values.name!r} in {where} has no time at row {values.index[first]} "
            f"({int(times.isna().sum())} such rows); drop them or fill the time"
        )
    return times


def _cut(value: object, times: pd.Series, key: str) -> Any:
    """A cut point of the time column's type: a number, or a date given as a string."""
    try:
        if ptypes.is_float_dtype(times.dtype):
            return float(value)  # type: ignore[arg-type]
        cut = pd.Timestamp(str(value))
        tz = times.dt.tz
        return cut.tz_localize(tz) if tz is not None and cut.tz is None else cut
    except (TypeError, ValueError):
        kind = "a number" if ptypes.is_float_dtype(times.dtype) else "a date string"
        raise SchemaError(f"data.split.{key}: {value!r} is not {kind} like the column {times.name!r}") from None


def make_splits(
    frames: Mapping, paths: Mapping, opts: Mapping[str, Any]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The three frames and where each came from; an empty split is an error. Each frame's index
    is the row number in its file, so a later error about a row points at the row to fix."""
    if opts["kind"] == "files" and opts.get("val_share") is not None:
        train, share, seed = frames["train"][0], float(opts["val_share"]), int(opts["seed"])
        to_val = carved_to_validation(train.index.to_numpy(), share, seed)
        rule = f"{paths['train']}, a {share:g} share of its rows (hashed row numbers, seed {seed})"
        parts = {
            "train": (train[~to_val], f"{paths['train']}, the rest after validation", "the file has no data rows"),
            "val": (train[to_val], rule, f"{len(train)} rows in the train file"),
            "test": (frames["test"][0], str(paths["test"]), "the file has no data rows"),
        }
    elif opts["kind"] == "files":
        parts = {s: (frames[s][0], str(paths[s]), "the file has no data rows") for s in SPLITS}
    else:
        frame, where = frames[None]
        parts = {
            s: (frame.iloc[rows], f"{paths[None]}, {rule}", f"{len(frame)} rows in all")
            for s, (rows, rule) in _split(frame, where, opts).items()
        }
    for s, (part, source, detail) in parts.items():
        if part.empty:
            raise SchemaError(f"data.split: the {s} split is empty ({source}; {detail}); {_EMPTY_FIXES[opts['kind']]}")
    return {s: part for s, (part, _, _) in parts.items()}, {s: p[1] for s, p in parts.items()}


_EMPTY_FIXES = {
    "ratio": "give it a larger share in data.split.ratios (or more rows)",
    "time": "move data.split.val_from/test_from (or change data.split.ratios) so every split gets rows",
    "column": "check data.split.values against the values of the split column",
    "files": "put rows in that file",
}
