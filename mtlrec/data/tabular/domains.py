"""Source and target domains in one table: which rows a run uses, and which target rows keep labels.

Transfer between domains of one catalogue (departments of a shop, countries, apps) needs each row's
domain and, for a target with few labels, which of its training rows are labelled. ``data.domain``
declares it:

* ``column``: the column that names each row's domain (never an input, like a label's source);
* ``target``: its value(s) for the target domain; ``source``: the source value(s) (default: every
  other value);
* ``rows``: ``source`` (train, val and test on source rows: the first step of a two-step recipe),
  ``target`` (all on target rows) or ``both`` (train on source and target rows, validate and test on
  target rows: joint training and domain adaptation). Selection is always on the rows evaluated, so
  with ``target`` and ``both`` it is on target validation only;
* ``labelled``: how many target training rows keep their labels (a seeded draw with ``seed``, a
  data seed: every run seed gets the same rows); the others become *unlabelled*: they stay in the
  training batches with every task masked out, so they enter no task loss and no metric, only a
  domain-adaptation loss (``adapt=dann`` / ``adapt=coral``).

The split (``data.split``) is made first, over all rows, so a row's split does not depend on which
domain is the target. Two reserved columns carry the result to the preprocessing:
:data:`DOMAIN` (0 source, 1 target) and :data:`LABELLED`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.data.raw import DOMAIN, LABELLED
from mtlrec.data.schema import SchemaError

ROWS = ("source", "target", "both")
OPTIONS = ("column", "target", "source", "rows", "labelled", "seed")


def domain_options(domain: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Checked ``data.domain`` options, or ``None`` when no column is declared."""
    if not domain or domain.get("column") is None:
        return None
    unknown = sorted(set(domain) - set(OPTIONS))
    if unknown:
        raise SchemaError(f"data.domain: unknown option(s) {unknown}; the options are {', '.join(OPTIONS)}")
    options = {"target": [], "source": None, "rows": "target", "labelled": None, "seed": 0, **domain}
    options["target"] = _values(options["target"], "target")
    if not options["target"]:
        raise SchemaError(f"data.domain.target: name the target domain's value(s) of column "
                          f"{options['column']!r}, e.g. data.domain.target=[Bottoms]")
    if options["source"] is not None:
        options["source"] = _values(options["source"], "source")
        both = sorted(set(options["source"]) & set(options["target"]))
        if both:
            raise SchemaError(f"data.domain: {both} is both source and target; a row belongs to one domain")
    if options["rows"] not in ROWS:
        raise SchemaError(f"data.domain.rows={options['rows']!r}: use one of {', '.join(ROWS)}")
    labelled = options["labelled"]
    if labelled is not None and (isinstance(labelled, bool) or not isinstance(labelled, int) or labelled < 0):
        raise SchemaError(f"data.domain.labelled={labelled!r}: give a number of target training rows (>= 0), or "
                          f"null for all")
    if labelled is not None and options["rows"] == "source":
        raise SchemaError("data.domain.labelled: with rows=source no target row is used; drop it, or use rows=target "
                          "or rows=both")
    return options


def _values(values: Any, option: str) -> list[str]:
    values = [values] if isinstance(values, (str, int, float)) else list(values or [])
    return [str(v) for v in values]


def select_domains(splits: dict[str, pd.DataFrame], options: dict[str, Any],
                   described: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """The rows each split keeps, with :data:`DOMAIN` and (in train) :data:`LABELLED` added."""
    column, rows = options["column"], options["rows"]
    _check_values_occur(splits, options, described)
    out = {}
    for split, frame in splits.items():
        where = described.get(split, split)
        values = frame[column]
        if values.isna().any():
            row = values.index[int(values.isna().to_numpy().argmax())]
            raise SchemaError(f"data.domain.column: {where}: row {row} has no {column!r}; add it to data.dropna")
        text = values.astype(str)
        target = text.isin(options["target"]).to_numpy()
        source = text.isin(options["source"]).to_numpy() if options["source"] is not None else ~target
        keep = {"source": source, "target": target, "both": source | target if split == "train" else target}[rows]
        kept = frame.loc[keep].copy()
        kept[DOMAIN] = target[keep].astype(np.float32)
        if not len(kept):
            raise SchemaError(f"data.domain: {where} has no {'source' if rows == 'source' else 'target'} rows "
                              f"(column {column!r}, target {options['target']}); check the values")
        out[split] = kept.reset_index(drop=True)
    if rows == "both" and not (out["train"][DOMAIN] == 0).any():
        raise SchemaError(f"data.domain: rows=both but the training split has no source row (column {column!r}, "
                          f"source {options['source'] or 'every value but the target'}); check data.domain.source")
    if options["labelled"] is not None:
        out["train"][LABELLED] = _labelled(out["train"], options["labelled"], options["seed"])
    return out


def _check_values_occur(splits: dict[str, pd.DataFrame], options: dict[str, Any],
                        described: Mapping[str, str]) -> None:
    """A listed source or target value that no row has is a typo (or a float column's ``1.0`` given
    as ``1``: values are compared as text); silently it would shrink a domain to what did match."""
    column = options["column"]
    present: set[str] = set()
    for split, frame in splits.items():
        if column not in frame.columns:
            raise SchemaError(f"data.domain.column: {described.get(split, split)} has no column {column!r}; the "
                              f"columns are {list(frame.columns)[:20]}")
        present.update(frame[column].dropna().astype(str).unique())
    for option in ("target", "source"):
        missing = [v for v in options[option] or [] if v not in present]
        if missing:
            raise SchemaError(f"data.domain.{option}: {missing} occur in no row of column {column!r}; its values "
                              f"are {sorted(present)[:20]}")


def _labelled(train: pd.DataFrame, count: int, seed: int) -> np.ndarray:
    """Every source row, and ``count`` target rows drawn with ``seed``."""
    target = np.flatnonzero(train[DOMAIN].to_numpy() == 1)
    if count > len(target):
        raise SchemaError(f"data.domain.labelled={count}: the target has only {len(target)} training rows; ask for "
                          f"fewer, or null for all")
    labelled = train[DOMAIN].to_numpy() == 0
    labelled[np.random.default_rng(seed).permutation(target)[:count]] = True
    return labelled
