"""Derived labels: a 0/1 task label computed from a column (``rating >= 4``, ``event in [buy]``).

Exports rarely hold labels as such; a comparison on a source column makes one without Python.
Two options cover the click-to-conversion logs: ``per: duration_ms`` compares the source divided
by another column (KuaiRand's long view: ``play_time_ms / duration_ms >= 0.5``), and ``where:
click`` gives 0 wherever that 0/1 column is 0 (ESMM's CTCVR label, click·purchase, on every
impression).
A missing source value gives a missing label rather than a negative, so the label check fails
loudly. The source column goes to the schema as excluded, whose leakage guard refuses it as a
feature. Rules are checked before any file is read.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular.options import checked_column, checked_entry

DERIVED_KEYS = ("from", "op", "value", "per", "where")

ORDER_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
EQUALITY_OPS = ("==", "!=", "in", "not_in")
OPS = (*ORDER_OPS, *EQUALITY_OPS)


def derived_rules(derived: object) -> dict[str, dict[str, Any]]:
    """Derived label -> its rule (``from``, ``op``, ``value``, ``option``), checked before any file is read."""
    if derived is not None and not isinstance(derived, Mapping):
        raise SchemaError(f"data.derived: expected {{name: {{from: column, op: ..., value: ...}}}}, got {derived!r}")
    rules = {}
    for name, given in (derived or {}).items():
        option = f"data.derived.{name}"
        rule = checked_entry(given, DERIVED_KEYS, ("from", "op"), option)
        if rule["op"] not in OPS:
            raise SchemaError(f"{option}.op: {rule['op']!r} is not an operator; use one of {', '.join(OPS)}")
        listed = rule["op"] in ("in", "not_in")
        if listed != isinstance(rule.get("value"), (list, tuple)):
            need = "a list of values" if listed else "one value (use op: in for a list)"
            raise SchemaError(f"{option}.value: op {rule['op']!r} needs {need}, got {rule.get('value')!r}")
        rules[str(name)] = {**rule, "option": option}
    return rules


def derive(frame: pd.DataFrame, where: str, rules: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Add one 0/1 column per rule, NaN where the source is missing (so a label check fails
    loudly instead of a missing value becoming a negative)."""
    added = {}
    for name, rule in rules.items():
        source = checked_column(frame, rule["from"], f"{rule['option']}.from", where)
        if name in frame.columns:
            raise SchemaError(
                f"{rule['option']}: {where} already has a column {name!r}; give the derived label another name"
            )
        values = frame[source]
        if rule.get("per") is not None:
            values = _ratio(values, frame[checked_column(frame, rule["per"], f"{rule['option']}.per", where)],
                            rule["option"], where)
        label = _compare(values, rule, where)
        if rule.get("where") is not None:
            gate = frame[checked_column(frame, rule["where"], f"{rule['option']}.where", where)]
            label = np.where(_zero_one(gate, f"{rule['option']}.where", where) == 0, 0.0, label)
        added[name] = label
    return frame.assign(**added) if added else frame


def _ratio(values: pd.Series, per: pd.Series, option: str, where: str) -> pd.Series:
    """``values / per``, missing where ``per`` is 0 or missing (a label check then names the row)."""
    for column in (values, per):
        if not ptypes.is_numeric_dtype(column.dtype):
            raise SchemaError(f"{option}.per: {column.name!r} in {where} holds text; per divides numeric columns")
    denominator = per.astype("float64").where(per != 0)
    return (values.astype("float64") / denominator).rename(values.name)


def _zero_one(gate: pd.Series, option: str, where: str) -> np.ndarray:
    g = pd.to_numeric(gate, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(g, (0.0, 1.0))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise SchemaError(
            f"{option}: {gate.name!r} in {where} must hold 0 or 1; row {gate.index[pos]} holds "
            f"{gate.iloc[pos]!r} ({int(bad.sum())} such rows)"
        )
    return g


def _compare(source: pd.Series, rule: Mapping[str, Any], where: str) -> np.ndarray:
    """Numeric comparison on a numeric column; ``==``/``in`` compare text on any other column."""
    op, option = rule["op"], rule["option"]
    listed = op in ("in", "not_in")
    values = list(rule["value"]) if listed else [rule.get("value")]
    if ptypes.is_numeric_dtype(source.dtype):
        left, values = source.to_numpy(dtype=np.float64, na_value=np.nan), _numbers(values, source.name, option)
    elif op in ORDER_OPS:
        raise SchemaError(
            f"{option}: op {op!r} needs a numeric column, but {source.name!r} in {where} holds text (e.g. "
            f"{source.dropna().head(1).tolist()}); use ==, !=, in or not_in"
        )
    else:
        left, values = source.astype(str).to_numpy(dtype=object), [str(v) for v in values]
    if listed:
        hit = np.isin(left, values)
        result = ~hit if op == "not_in" else hit
    else:
        result = (ORDER_OPS.get(op) or {"==": operator.eq, "!=": operator.ne}[op])(left, values[0])
    return np.where(source.isna().to_numpy(), np.nan, np.asarray(result, dtype=np.float64))


def _numbers(values: list, column: object, option: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise SchemaError(f"{option}.value: {values!r} must be number(s), since column {column!r} is numeric") from None
