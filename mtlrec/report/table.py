"""The paper-style results table as data: one row per swept setting, one column per task metric.

Building the table (grouping, statistics, best marks, baseline tests, reference numbers) is kept
apart from rendering it (:mod:`mtlrec.report.render`), so Markdown, LaTeX and CSV can never
disagree about a number or a mark.

Rows are the values of the *row keys* — by default every override key that varies across the
complete runs, except ``seed`` (the replication axis) and location keys (``paths.*``,
``hydra.*``), which do not change what a run computes. Rows and columns are sorted so the same
runs always give the same table.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mtlrec.report.collect import Collection, is_missing, parse_value, values_equal
from mtlrec.report.reference import ALL_ROWS_LABEL, MatchedReference, RefValue, match_reference
from mtlrec.report.stats import Summary, best_rows, decimals, summarize, welch_p
from mtlrec.training.results import _LOCATION_KEYS

THROUGHPUT = "train_samples_per_second"
PARAMS = "num_parameters"


@dataclass(frozen=True)
class Cell:
    """One metric of one row: its summary, whether it is the column's best, its p vs the baseline."""

    summary: Summary
    best: bool = False
    p_value: float = math.nan


@dataclass
class Table:
    """Everything a renderer needs; see the module docstring."""

    split: str
    row_keys: list[str]
    rows: list[tuple[Any, ...]]
    columns: list[str]
    cells: dict[tuple[int, str], Cell]
    decimals: dict[str, int]
    throughput: list[Summary]
    params: list[tuple[float, float]]  # (min, max) over the row's runs
    baseline: dict[str, str] | None = None
    baseline_rows: list[int | None] = field(default_factory=list)
    references: MatchedReference = field(default_factory=dict)
    n_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    def label(self, row: int) -> str:
        """``"arch=mmoe,data.correlation=0.5"`` — the row's name in reference files and CSV."""
        return row_label(self.row_keys, self.rows[row])

    def reference_columns(self, column: str) -> list[str]:
        """Names of the reference columns with at least one value for this metric column."""
        return [name for name, cells in self.references.items() if any(c == column for _, c in cells)]

    def reference(self, name: str, row: int, column: str) -> RefValue | None:
        return self.references.get(name, {}).get((row, column))


# --------------------------------------------------------------------------- factor values


def format_value(value: Any) -> str:
    """A factor value as printed: integers plainly, floats shortest-exact, unset as ``(unset)``."""
    if is_missing(value):
        return "(unset)"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def row_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    if not keys:
        return ALL_ROWS_LABEL
    return ",".join(f"{k}={format_value(v)}" for k, v in zip(keys, values))


def sort_key(value: Any) -> tuple[int, Any]:
    """Numbers first in numeric order, then text in text order, then unset values."""
    if is_missing(value):
        return (2, "")
    parsed = parse_value(value)
    if isinstance(parsed, numbers.Real):
        return (0, float(parsed))
    return (1, str(parsed))


def varying_factors(collection: Collection) -> list[str]:
    """Override keys taking more than one value across complete runs (unset counts as a value)."""
    out = []
    for key in collection.factors:
        values = {format_value(v) for v in collection.runs[key].tolist()}
        if len(values) > 1:
            out.append(key)
    return out


def default_row_keys(collection: Collection) -> list[str]:
    """The swept factors: varying override keys, less ``seed`` and location keys."""
    return [k for k in varying_factors(collection) if k != "seed" and k.split(".", 1)[0] not in _LOCATION_KEYS]


def select_columns(collection: Collection, split: str, patterns: Sequence[str] | None) -> list[str]:
    """The split's metric columns, filtered by glob patterns on ``task/metric`` or the full name."""
    columns = collection.metric_columns(split)
    if not patterns:
        return columns
    keep = []
    for col in columns:
        short = col.split("/", 1)[1]
        if any(fnmatch.fnmatchcase(col, p) or fnmatch.fnmatchcase(short, p) for p in patterns):
            keep.append(col)
    return keep


def group_runs(runs: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """The runs grouped by the values of ``keys`` (unset is a value of its own), in sorted order."""
    groups: dict[tuple[str, ...], tuple[tuple[Any, ...], list[int]]] = {}
    columns = [runs[k].tolist() for k in keys]
    for position in range(len(runs)):
        values = tuple(None if is_missing(col[position]) else col[position] for col in columns)
        ident = tuple(format_value(v) for v in values)
        groups.setdefault(ident, (values, []))[1].append(position)
    ordered = sorted(groups.values(), key=lambda item: tuple(sort_key(v) for v in item[0]))
    return [(values, runs.iloc[positions]) for values, positions in ordered]


# --------------------------------------------------------------------------- building


def build_table(
    collection: Collection,
    *,
    split: str = "test",
    row_keys: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    baseline: Mapping[str, str] | None = None,
    reference: Mapping[str, Mapping[str, Mapping[str, RefValue]]] | None = None,
) -> Table:
    """Group the complete runs by ``row_keys`` and summarise each shown metric.

    Raises ``ValueError`` for requests that cannot be met (unknown row key, no metric matches,
    baseline keys outside the rows or matching no row): a report must fail loudly, not print a
    table that silently answers a different question.
    """
    runs = collection.runs
    if runs.empty:
        raise ValueError("no complete runs to tabulate")
    keys = list(default_row_keys(collection) if row_keys is None else row_keys)
    unknown = [k for k in keys if k not in collection.factors]
    if unknown:
        raise ValueError(f"unknown row key(s) {unknown}; override keys of these runs: {collection.factors}")
    columns = select_columns(collection, split, metrics)
    if not columns:
        raise ValueError(f"no {split} metric matches {list(metrics or [])}; "
                         f"available: {[c.split('/', 1)[1] for c in collection.metric_columns(split)]}")

    warnings = []
    pooled = [k for k in varying_factors(collection) if k not in keys and k != "seed"
              and k.split(".", 1)[0] not in _LOCATION_KEYS]
    if pooled:
        warnings.append(f"factor(s) {pooled} vary but are not row keys: their runs are pooled within rows")

    groups = group_runs(runs, keys)
    rows = [values for values, _ in groups]
    cells: dict[tuple[int, str], Cell] = {}
    places: dict[str, int] = {}
    for col in columns:
        summaries = [summarize(g[col]) for _, g in groups]
        places[col] = decimals(col, [s.mean for s in summaries])
        best = best_rows([s.mean for s in summaries], col, places[col])
        for i, s in enumerate(summaries):
            cells[(i, col)] = Cell(s, best=i in best)

    baseline_rows: list[int | None] = []
    if baseline:
        baseline_rows = _baseline_rows(dict(baseline), keys, rows)
        for i, b in enumerate(baseline_rows):
            if b is None or b == i:
                continue
            for col in columns:
                p = welch_p(groups[i][1][col], groups[b][1][col])
                cells[(i, col)] = Cell(cells[(i, col)].summary, cells[(i, col)].best, p)
        missing = [row_label(keys, rows[i]) for i, b in enumerate(baseline_rows) if b is None]
        if missing:
            warnings.append(f"no baseline row to compare with for: {missing}")

    matched: MatchedReference = {}
    if reference:
        matched, ref_warnings = match_reference(reference, keys, rows, split, columns)
        warnings.extend(ref_warnings)

    throughput = [summarize(g[THROUGHPUT]) for _, g in groups]
    params = [(float(g[PARAMS].min()), float(g[PARAMS].max())) for _, g in groups]
    return Table(split=split, row_keys=keys, rows=rows, columns=columns, cells=cells, decimals=places,
                 throughput=throughput, params=params, baseline=dict(baseline) if baseline else None,
                 baseline_rows=baseline_rows, references=matched, n_runs=len(runs), warnings=warnings)


def _baseline_rows(baseline: dict[str, str], keys: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
    """For each row, the row it is tested against: itself with the baseline's keys set to theirs.

    With rows ``arch × data.correlation`` and baseline ``arch=shared_bottom``, MMoE at correlation
    0.5 is compared with shared-bottom at 0.5 — the comparison a paper table implies.
    """
    outside = [k for k in baseline if k not in keys]
    if outside:
        raise ValueError(f"baseline key(s) {outside} are not row keys {list(keys)}")
    if not any(all(values_equal(baseline[k], r[keys.index(k)]) for k in baseline) for r in rows):
        raise ValueError(f"baseline {baseline} matches no row")
    out: list[int | None] = []
    for values in rows:
        target = [baseline[k] if k in baseline else v for k, v in zip(keys, values)]
        found = [j for j, other in enumerate(rows) if all(values_equal(a, b) for a, b in zip(target, other))]
        out.append(found[0] if found else None)
    return out
