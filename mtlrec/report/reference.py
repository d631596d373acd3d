"""Reference numbers (e.g. a paper's) printed beside our own, from a small YAML file.

Replications are judged against published numbers, so the report can show them next to ours
instead of leaving the reader to flip between PDFs. Format::

    columns:
      "paper":                          # column name; shown as "<task>/<metric> (paper)"
        "arch=mmoe":                    # row label: KEY=VALUE of every table row key, joined by ","
          test/income/auc: 0.9359       # metric column "<split>/<task>/<metric>" ...
          marital/auc: 0.9906           # ... or "<task>/<metric>": the split being reported
        "arch=shared_bottom":
          test/income/auc: 0.9285
          test/marital/auc: "0.99 (fig. 3)"   # strings are printed verbatim

Row labels match the table's rows by value (``data.correlation=0.5`` matches ``0.50``) and in any
key order. A table without row keys has the single row label ``all``. Entries that match no row
or no shown metric are reported as warnings — a typo must not silently drop a number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mtlrec.report.collect import values_equal

ALL_ROWS_LABEL = "all"
RefValue = float | str
# column name -> {(row index, metric column): value}
MatchedReference = dict[str, dict[tuple[int, str], RefValue]]


def load_reference(path: str | os.PathLike) -> dict[str, dict[str, dict[str, RefValue]]]:
    """Read and validate a reference file: ``{column: {row label: {metric: value}}}``."""
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, Mapping) or not isinstance(data.get("columns"), Mapping):
        raise ValueError(f"{path}: expected a mapping with a 'columns' mapping at the top")
    out: dict[str, dict[str, dict[str, RefValue]]] = {}
    for name, rows in data["columns"].items():
        if not isinstance(rows, Mapping):
            raise ValueError(f"{path}: column {name!r} must map row labels to metric mappings")
        out[str(name)] = {}
        for label, metrics in rows.items():
            if not isinstance(metrics, Mapping):
                raise ValueError(f"{path}: {name!r} / {label!r} must map metric names to values")
            out[str(name)][str(label)] = {str(m): _value(v) for m, v in metrics.items()}
    return out


def _value(v: Any) -> RefValue:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return float(v)


def parse_label(label: str) -> dict[str, str]:
    """``"arch=mmoe,data.correlation=0.5"`` -> ``{"arch": "mmoe", "data.correlation": "0.5"}``."""
    if label.strip() == ALL_ROWS_LABEL:
        return {}
    parts = [p.strip() for p in label.split(",") if p.strip()]
    if not all("=" in p for p in parts):
        raise ValueError(f"reference row label {label!r} is not KEY=VALUE[,KEY=VALUE]")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in parts)}


def match_reference(
    reference: Mapping[str, Mapping[str, Mapping[str, RefValue]]],
    row_keys: Sequence[str],
    rows: Sequence[Sequence[Any]],
    split: str,
    columns: Sequence[str],
) -> tuple[MatchedReference, list[str]]:
    """Place each reference value at its (row, metric column); also return what did not fit."""
    matched: MatchedReference = {}
    warnings: list[str] = []
    for name in sorted(reference):
        cells: dict[tuple[int, str], RefValue] = {}
        for label in sorted(reference[name]):
            row = _find_row(parse_label(label), row_keys, rows)
            if row is None:
                warnings.append(f"reference {name!r}: row {label!r} matches no table row (row keys: "
                                f"{', '.join(row_keys) or ALL_ROWS_LABEL})")
                continue
            for metric, value in sorted(reference[name][label].items()):
                column = metric if metric.split("/", 1)[0] in ("test", "val") else f"{split}/{metric}"
                if column not in columns:
                    warnings.append(f"reference {name!r}: metric {metric!r} of row {label!r} is not a shown column")
                    continue
                cells[(row, column)] = value
        if cells:
            matched[name] = cells
    return matched, warnings


def _find_row(wanted: Mapping[str, str], row_keys: Sequence[str], rows: Sequence[Sequence[Any]]) -> int | None:
    if set(wanted) != set(row_keys):
        return None
    for index, values in enumerate(rows):
        if all(values_equal(wanted[k], v) for k, v in zip(row_keys, values)):
            return index
    return None
