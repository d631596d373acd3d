"""The paper-style results table as data: one row per swept setting, one column per task metric.

Building the table (grouping, statistics, best marks, baseline tests and paired wins, reference
numbers) is kept apart from rendering it (:mod:`mtlrec.report.render`), so Markdown, LaTeX and
CSV can never disagree about a number or a mark.

Rows are the values of the *row keys* — by default every override key that varies across the
complete runs, except ``seed`` (the replication axis) and location keys (``paths.*``,
``hydra.*``), which do not change what a run computes. Rows and columns are sorted so the same
runs always give the same table.

With a baseline, each row is compared with its baseline row (the row with the baseline's values
for the baseline keys and this row's values for the other keys) twice: Welch's test over the two
groups of seeds, and *paired wins*, run against run. A run's partner is the baseline row's run
with the same seed and the same values of any pooled factors (varying factors that are not row
keys), so MMoE at correlation 0.5, seed 3 meets shared-bottom at correlation 0.5, seed 3. Seeds
only one side ran are left out of the count.
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
from mtlrec.report.stats import Summary, Wins, best_rows, decimals, direction, paired_wins, summarize, welch_p
from mtlrec.training.results import is_location_key

THROUGHPUT = "train_samples_per_second"
PARAMS = "num_parameters"


@dataclass(frozen=True)
class Cell:
    """One metric of one row: its summary, whether it is the column's best, its p vs the baseline,
    and its paired wins against the baseline (``None`` for the baseline rows themselves, for rows
    without a baseline row, and when no baseline was given)."""

    summary: Summary
    best: bool = False
    p_value: float = math.nan
    wins: Wins | None = None


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
    # Pooled factors runs are paired on besides the seed (empty when every varying factor is a row key).
    paired_on: list[str] = field(default_factory=list)
    # Shown derived columns (task means) -> the tasks they average.
    derived: dict[str, list[str]] = field(default_factory=dict)

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
    return [k for k in varying_factors(collection) if k != "seed" and not is_location_key(k)]


def select_columns(collection: Collection, split: str, patterns: Sequence[str] | None) -> list[str]:
    """The split's metric columns, filtered by glob patterns on ``task/metric`` or the full name
    (a pattern without ``/`` such as ``mse`` matches the metric name in every task).

    Derived columns (task means) were asked for by name, so they are kept whatever the patterns.
    """
    columns = collection.metric_columns(split)
    if not patterns:
        return columns
    return [col for col in columns if col in collection.derived or _matches(col, patterns)]


def _matches(column: str, patterns: Sequence[str]) -> bool:
    """A glob matches the full name or ``task/metric``; one without ``/`` the metric name alone."""
    short = column.split("/", 1)[1]
    name = column.rsplit("/", 1)[1]
    return any(fnmatch.fnmatchcase(column, p) or fnmatch.fnmatchcase(short, p)
               or ("/" not in p and fnmatch.fnmatchcase(name, p)) for p in patterns)


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
    if not columns or (metrics and not any(_matches(c, metrics) for c in columns)):
        raise ValueError(f"no {split} metric matches {list(metrics or [])}; "
                         f"available: {[c.split('/', 1)[1] for c in collection.metric_columns(split)]}")

    warnings = []
    groups = group_runs(runs, keys)
    # a factor that is not a row key but takes one value per seed in each row pools nothing and
    # pairs nothing: it goes with the row keys (each arm of a comparison labelled by one key sets
    # several) or with the seed (init_from=<the source run of this seed>)
    pooled = [k for k in varying_factors(collection) if k not in keys and k != "seed" and not is_location_key(k)
              and any(_varies_within_a_seed(g, k) for _, g in groups)]
    if pooled:
        warnings.append(f"factor(s) {pooled} vary but are not row keys: their runs are pooled within rows")
    per_seed = [k for k in varying_factors(collection) if k not in keys and k != "seed" and not is_location_key(k)
                and k not in pooled and any(g[k].map(sort_key).nunique() > 1 for _, g in groups)]
    if per_seed:
        warnings.append(f"factor(s) {per_seed} differ between the seeds of a row (one value per seed, e.g. each "
                        f"seed's own source run): check that the seeds of a row differ in nothing else by intent")

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
        units = [_pairing_units(g, pooled) for _, g in groups]
        unit_name = "/".join(["seed", *pooled])
        compared = {i: b for i, b in enumerate(baseline_rows) if b is not None and b != i}
        for i, b in compared.items():
            shared = sorted(set(units[i][0]) & set(units[b][0]))
            for col in columns:
                p = welch_p(groups[i][1][col], groups[b][1][col])
                mine, theirs = groups[i][1][col].tolist(), groups[b][1][col].tolist()
                wins = paired_wins(((mine[units[i][0][u]], theirs[units[b][0][u]]) for u in shared),
                                   direction(col))
                cells[(i, col)] = Cell(cells[(i, col)].summary, cells[(i, col)].best, p, wins)
            if not shared:
                warnings.append(f"{row_label(keys, rows[i])} and its baseline {row_label(keys, rows[b])} share no "
                                f"{unit_name}: no paired wins")
        for i in sorted(set(compared) | set(compared.values())):
            if units[i][1]:
                warnings.append(f"{row_label(keys, rows[i])}: several runs share {unit_name} "
                                f"{', '.join(units[i][1])}; left out of paired wins")
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
                 baseline_rows=baseline_rows, references=matched, n_runs=len(runs), warnings=warnings,
                 paired_on=list(pooled) if baseline else [],
                 derived={c: list(collection.derived[c]) for c in columns if c in collection.derived})


def _varies_within_a_seed(group: pd.DataFrame, factor: str) -> bool:
    """Whether runs of one seed in ``group`` hold different values of ``factor``."""
    values: dict[Any, set] = {}
    for seed, value in zip(group["seed"].tolist(), group[factor].tolist()):
        values.setdefault(sort_key(seed), set()).add(sort_key(value))
    return any(len(v) > 1 for v in values.values())


def _pairing_units(group: pd.DataFrame, pooled: Sequence[str]) -> tuple[dict[tuple[Any, ...], int], list[str]]:
    """Each run's pairing unit (seed, then pooled factor values) -> its position in ``group``.

    Values are compared as :func:`values_equal` does (seed ``3`` is seed ``3.0``). Units held by
    more than one run of the group (configs differing only outside the overrides) cannot be paired
    without guessing: they are left out and returned, as printed text, for a warning. Runs without
    a seed are never paired.
    """
    found: dict[tuple[Any, ...], list[int]] = {}
    columns = [group["seed"].tolist()] + [group[k].tolist() for k in pooled]
    for position in range(len(group)):
        values = [col[position] for col in columns]
        if is_missing(values[0]):
            continue
        found.setdefault(tuple(sort_key(v) for v in values), []).append(position)
    unique = {unit: where[0] for unit, where in found.items() if len(where) == 1}
    ambiguous = ["/".join(format_value(columns[c][where[0]]) for c in range(len(columns)))
                 for _, where in sorted(found.items()) if len(where) > 1]
    return unique, ambiguous


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
