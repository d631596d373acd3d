"""Label columns as tensors, one small encoder per task kind, checked row by row.

A wrong label is worse than a crash: a "2" in a binary column or a rating outside the declared
classes would train silently on garbage. Each check names the data, the column, the first bad row
and the fix. A multilabel task's tags are fit on training (unless declared; then a training tag outside them
is an error): a tag seen only at validation, test or scoring time is ignored there (out of
vocabulary), while a malformed cell is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.columns.categorical import category_keys
from mtlrec.data.messages import shown
from mtlrec.data.schema import SchemaError, TaskSpec


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _row(values: pd.Series, position: int) -> object:
    """The frame's row label of ``position``: the row's number in its file when the dataset keeps
    it (the tabular loader does), even when only the rows of a task's sample space are passed."""
    return values.index[position]


class LabelEncoder:
    kind: ClassVar[str]

    def __init__(self, task: TaskSpec):
        self.task = task

    def fit(self, values: pd.Series, split: str) -> None:
        """Learn what the declaration leaves open (only multilabel tags so far)."""

    def fitted_task(self) -> TaskSpec:
        return self.task

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def where(self, split: str) -> str:
        return f"{split}: label column {self.task.label!r} (task {self.task.name!r})"

    def require_present(self, values: pd.Series, split: str) -> None:
        bad = values.isna().to_numpy()
        if bad.any():
            raise SchemaError(
                f"{self.where(split)} has {int(bad.sum())} row(s) with a missing value, first at row "
                f"{_row(values, _first(bad))}; drop those rows or declare a mask column for the task"
            )

    def numbers(self, values: pd.Series, split: str) -> np.ndarray:
        self.require_present(values, split)
        try:
            y = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError):
            bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
            pos = _first(bad.to_numpy())
            raise SchemaError(
                f"{self.where(split)}: row {_row(values, pos)} holds {shown(values.iloc[pos])}, not a number"
                + ("; declare the task's classes to use named labels" if self.task.kind == "multiclass" else "")
            ) from None
        bad = ~np.isfinite(y)
        if bad.any():
            raise SchemaError(
                f"{self.where(split)} has {int(bad.sum())} row(s) with an infinite value, first at row "
                f"{_row(values, _first(bad))}; drop or fix those rows"
            )
        return y

    def transform(self, values: pd.Series, split: str) -> Tensor:
        raise NotImplementedError


class BinaryLabels(LabelEncoder):
    kind = "binary"

    def transform(self, values, split):
        y = self.numbers(values, split)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise SchemaError(
                f"{self.where(split)}: a binary task needs 0/1 labels; row {_row(values, _first(bad))} holds "
                f"{y[_first(bad)]:g} "
                f"({int(bad.sum())} such rows); derive a 0/1 label (e.g. a threshold) or declare it multiclass"
            )
        return torch.from_numpy(y.astype(np.float32))


class RegressionLabels(LabelEncoder):
    kind = "regression"

    def transform(self, values, split):
        y = self.numbers(values, split)
        if self.task.log1p:
            bad = y <= -1
            if bad.any():
                raise SchemaError(f"{self.where(split)}: log1p needs values > -1; row {_row(values, _first(bad))} "
                                  f"holds {y[_first(bad)]:g}; drop log1p or fix the rows")
            y = np.log1p(y)
        return torch.from_numpy(y.astype(np.float32))


class MulticlassLabels(LabelEncoder):
    """Named classes (``classes: [Tops, Dresses, …]`` matched by value) or integer ids."""

    kind = "multiclass"

    def transform(self, values, split):
        classes = self.task.classes
        if classes is None:
            y = self.numbers(values, split)
            bad = ~((y >= 0) & (y < self.task.num_classes) & (y == np.round(y)))
            if bad.any():
                raise SchemaError(
                    f"{self.where(split)}: row {_row(values, _first(bad))} holds {y[_first(bad)]:g}, not an integer "
                    f"class id in [0, {self.task.num_classes}); declare the task's classes or fix num_classes"
                )
            return torch.from_numpy(y.astype(np.int64))
        self.require_present(values, split)
        codes = pd.Categorical(category_keys(values), categories=list(classes)).codes
        bad = codes < 0
        if bad.any():
            pos = _first(bad)
            raise SchemaError(
                f"{self.where(split)}: row {_row(values, pos)} holds {shown(values.iloc[pos])}, which is not one of the declared "
                f"classes {list(classes)}; add it to the task's classes or drop those rows"
            )
        return torch.from_numpy(codes.astype(np.int64))


class MultilabelLabels(LabelEncoder):
    """A delimited tag list per cell (``"tops|knits"``) as a ``[N, C]`` 0/1 float matrix."""

    kind = "multilabel"

    def _cells(self, values: pd.Series, split: str) -> list[list[str]]:
        """Tags per row. An empty cell is "no tag" (a CSV reader turns it into a missing value, a
        Parquet reader keeps it as ``""``: both mean the same); a row whose tags are unknown
        belongs outside the task's sample space, via a mask column."""
        sep = self.task.separator
        values = values.where(values.notna(), "")
        out = []
        for row, cell in zip(values.index, values.tolist()):
            if not isinstance(cell, str):
                raise SchemaError(
                    f"{self.where(split)}: row {row} holds {shown(cell)}, not a {sep!r}-separated tag list; fix the cell"
                )
            tags = [t.strip() for t in cell.split(sep)] if cell.strip() else []
            if any(not t for t in tags):
                raise SchemaError(
                    f"{self.where(split)}: row {row} holds the malformed tag list {cell!r} (an empty tag between "
                    f"separators {sep!r}); fix the cell or set the task's separator"
                )
            out.append(tags)
        return out

    def fit(self, values, split):
        cells = self._cells(values, split)
        if self.task.classes is None:
            self.tags = sorted(Counter(t for tags in cells for t in tags))
            if not self.tags:
                raise SchemaError(f"{self.where(split)} holds no tag at all; a multilabel task needs tags")
            return
        self.tags = list(self.task.classes)
        declared = set(self.tags)
        for row, tags in zip(values.index, cells):  # in training, an undeclared tag is a typo, not news
            unknown = [t for t in tags if t not in declared]
            if unknown:
                raise SchemaError(
                    f"{self.where(split)}: row {row} holds the tag {unknown[0]!r}, which is not one of the declared "
                    f"classes {self.tags}; add it to the task's classes or fix the cell"
                )

    def fitted_task(self):
        return replace(self.task, classes=tuple(self.tags), num_classes=len(self.tags))

    def state_dict(self):
        return {"tags": self.tags}

    def load_state_dict(self, state):
        self.tags = list(state["tags"])

    def transform(self, values, split):
        index = {t: i for i, t in enumerate(self.tags)}
        y = np.zeros((len(values), len(self.tags)), dtype=np.float32)
        for row, tags in enumerate(self._cells(values, split)):
            for t in tags:
                if t in index:  # a tag not seen in training is ignored (out of vocabulary)
                    y[row, index[t]] = 1.0
        return torch.from_numpy(y)


LABEL_ENCODERS: dict[str, type[LabelEncoder]] = {
    cls.kind: cls for cls in (BinaryLabels, MulticlassLabels, MultilabelLabels, RegressionLabels)
}


def label_encoder(task: TaskSpec) -> LabelEncoder:
    return LABEL_ENCODERS[task.kind](task)
