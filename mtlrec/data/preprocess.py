"""Turns raw frames into :class:`TensorTable` s, with statistics fit on the training split only.

Vocabularies (categoricals) and mean/std (numerics) come from the training split; validation,
test and tomorrow's data are transformed with those, and a category never seen in training maps
to the out-of-vocabulary id 0 of its field. The fitted state is plain JSON, saved with each run,
so a trained model can score new files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mtlrec.data.schema import Schema, SchemaError, TaskSpec
from mtlrec.data.table import TensorTable
from mtlrec.training.results import write_json_atomic

OOV = 0  # id 0 of every field is "not seen in training"
MISSING = "<missing>"  # a missing categorical value is a category of its own


def category_keys(values: pd.Series) -> pd.Series:
    """Categorical values as stable string keys.

    An integer-coded column that has a gap in one split is float there (1 -> 1.0): keys are made
    from the integer form so "1" in training still matches that split's "1.0".
    """
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        if len(present) and bool((present == np.round(present)).all()):
            values = values.astype("Int64")
    keys = values.astype(str)
    return keys.where(values.notna(), MISSING)


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class Preprocessor:
    """Fit on the training frame, then transform any frame with the same columns."""

    def __init__(self, schema: Schema, min_count: int = 1):
        self.schema = schema
        self.min_count = min_count
        self.vocabularies: dict[str, list[str]] = {}
        self.numeric_stats: dict[str, tuple[float, float]] = {}

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, split: str = "train") -> "Preprocessor":
        self._require_columns(train, [f.name for f in self.schema.features], split)
        for f in self.schema.categorical:
            counts = category_keys(train[f.name]).value_counts()
            kept = counts[counts >= self.min_count].index
            self.vocabularies[f.name] = sorted(map(str, kept))
        for f in self.schema.numeric:
            values = self._numeric_values(train, f.name, f.log1p)
            mean, std = float(np.nanmean(values)), float(np.nanstd(values))
            self.numeric_stats[f.name] = (mean, std if std > 0 else 1.0)
        return self

    @property
    def fitted(self) -> bool:
        return len(self.vocabularies) == len(self.schema.categorical) and len(self.numeric_stats) == len(
            self.schema.numeric
        )

    @property
    def field_sizes(self) -> list[int]:
        """Ids per categorical field, OOV included, in schema order."""
        return [len(self.vocabularies[f.name]) + 1 for f in self.schema.categorical]

    # -- transforming ----------------------------------------------------------------------
    def transform(self, frame: pd.DataFrame, split: str = "data", with_labels: bool = True) -> TensorTable:
        """Tensors for ``frame``; ``split`` only names the frame in error messages."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.transform called before fit (or load)")
        self._require_columns(frame, [f.name for f in self.schema.features], split)
        n = len(frame)
        offsets = np.cumsum([0] + self.field_sizes[:-1])
        cat = np.empty((n, len(self.schema.categorical)), dtype=np.int64)
        for j, f in enumerate(self.schema.categorical):
            codes = pd.Categorical(category_keys(frame[f.name]), categories=self.vocabularies[f.name]).codes
            cat[:, j] = codes.astype(np.int64) + 1 + offsets[j]  # unseen -> -1 -> OOV (0)
        num = np.empty((n, len(self.schema.numeric)), dtype=np.float32)
        for j, f in enumerate(self.schema.numeric):
            mean, std = self.numeric_stats[f.name]
            values = (self._numeric_values(frame, f.name, f.log1p) - mean) / std
            num[:, j] = np.nan_to_num(values, nan=0.0)  # missing -> the training mean
        labels, masks = {}, {}
        if with_labels:
            for task in self.schema.tasks:
                labels[task.name], mask = self._labels(frame, task, split)
                if mask is not None:
                    masks[task.name] = mask
        return TensorTable(torch.from_numpy(cat), torch.from_numpy(num), labels, masks)

    def _labels(self, frame: pd.DataFrame, task: TaskSpec, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        columns = [task.label] + ([task.mask] if task.mask else [])
        self._require_columns(frame, columns, split)
        y = frame[task.label].to_numpy(dtype=np.float64, na_value=np.nan)
        mask = None
        if task.mask:
            m = frame[task.mask].to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isnan(m).any() or not np.isin(m, (0.0, 1.0)).all():
                raise SchemaError(f"{split}: mask column {task.mask!r} of task {task.name!r} must be 0/1 without gaps")
            mask = m.astype(bool)
            y = np.where(mask, y, 0.0)
        bad = np.isnan(y)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"{split}: label column {task.label!r} (task {task.name!r}) has {int(bad.sum())} missing value(s), "
                f"first at row {first}; drop those rows or declare a mask column for the task"
            )
        if task.kind == "binary" and not np.isin(y, (0.0, 1.0)).all():
            bad_rows = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
            raise SchemaError(
                f"{split}: binary task {task.name!r} needs 0/1 labels in column {task.label!r}; found "
                f"{sorted(set(y[bad_rows[:5]].tolist()))} (first at row {int(bad_rows[0])})"
            )
        if task.kind == "multiclass":
            if not ((y >= 0) & (y < task.num_classes) & (y == np.round(y))).all():
                raise SchemaError(
                    f"{split}: multiclass task {task.name!r} needs integer labels in [0, {task.num_classes}) "
                    f"in column {task.label!r}"
                )
            return torch.from_numpy(y.astype(np.int64)), None if mask is None else torch.from_numpy(mask)
        out = torch.from_numpy(y.astype(np.float32))
        return out, None if mask is None else torch.from_numpy(mask)

    @staticmethod
    def _numeric_values(frame: pd.DataFrame, column: str, log1p: bool) -> np.ndarray:
        try:
            values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError) as err:
            raise SchemaError(f"numeric feature {column!r} holds non-numeric values ({err}); declare it categorical") from err
        if np.isinf(values).any():
            row = int(np.flatnonzero(np.isinf(values))[0])
            raise SchemaError(
                f"numeric feature {column!r} holds an infinite value (first at row {row}); "
                f"clean it or mark it missing (NaN is imputed with the training mean)"
            )
        return _signed_log1p(values) if log1p else values

    @staticmethod
    def _require_columns(frame: pd.DataFrame, columns: list[str], split: str) -> None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            shown = list(frame.columns)[:20]
            more = f" (+{len(frame.columns) - 20} more)" if len(frame.columns) > 20 else ""
            raise SchemaError(
                f"{split}: column(s) {missing} missing; the frame has {shown}{more}. "
                f"Check the file and the dataset's schema (feature/label names)"
            )

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "vocabularies": self.vocabularies,
            "numeric_stats": {k: list(v) for k, v in self.numeric_stats.items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, schema: Schema) -> "Preprocessor":
        state = json.loads(Path(path).read_text())
        pre = cls(schema, min_count=state["min_count"])
        pre.vocabularies = state["vocabularies"]
        pre.numeric_stats = {k: (float(v[0]), float(v[1])) for k, v in state["numeric_stats"].items()}
        expected = ({f.name for f in schema.categorical}, {f.name for f in schema.numeric})
        saved = (set(pre.vocabularies), set(pre.numeric_stats))
        if saved != expected:
            raise SchemaError(
                f"{path}: saved preprocessing is for categorical {sorted(saved[0])} / numeric {sorted(saved[1])}, "
                f"but the schema has categorical {sorted(expected[0])} / numeric {sorted(expected[1])}; "
                f"use the schema the run was trained with"
            )
        return pre
