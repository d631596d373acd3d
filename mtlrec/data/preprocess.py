"""Turns raw frames into :class:`TensorTable` s, with every statistic fit on the training split only.

The preprocessing is a set of column transformers (one per fused kind, one per token-bag or other
per-feature kind; see :mod:`mtlrec.data.columns`) and a label encoder per task (see
:mod:`mtlrec.data.labels`). Validation, test and tomorrow's data are transformed with the training
state. The fitted state is plain JSON, saved with each run, so a trained model can score new files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mtlrec.data.columns import TRANSFORMERS, ColumnTransformer, transformer_class
from mtlrec.data.columns.categorical import MISSING, OOV, category_keys  # noqa: F401  (re-exported)
from mtlrec.data.labels import LabelEncoder, label_encoder
from mtlrec.data.messages import shown
from mtlrec.data.raw import DOMAIN, LABELLED
from mtlrec.data.schema import Schema, SchemaError, TaskSpec
from mtlrec.data.table import TensorTable
from mtlrec.training.results import write_json_atomic

STATE_FORMAT = 2


def build_transformers(schema: Schema) -> dict[str, ColumnTransformer]:
    """Batch key -> transformer, ordered by kind (as registered: categorical, numeric, multi-hot,
    text) then by the schema's feature order, so the encoder's output layout does not depend on
    how a dataset interleaves its columns. A feature named like a fused kind would collide."""
    transformers: dict[str, ColumnTransformer] = {}
    rank = {kind: i for i, kind in enumerate(TRANSFORMERS)}
    for spec in sorted(schema.features, key=lambda f: rank.get(f.kind, len(rank))):
        cls = transformer_class(spec.kind, spec.name)
        if cls.fused:
            if cls.kind not in transformers:
                transformers[cls.kind] = cls(schema.of_kind(cls.kind))
            continue
        transformers[spec.name] = cls([spec])
    fused = {k for k, t in transformers.items() if t.fused}
    clash = sorted(fused & {f.name for f in schema.features if not transformer_class(f.kind).fused})
    if clash:
        raise SchemaError(
            f"feature(s) {clash}: the name is also the batch key of all {clash[0]} features; rename the column "
            f"(the tabular reader's rename option)"
        )
    return transformers


class Preprocessor:
    """Fit on the training frame, then transform any frame with the same columns.

    ``schema`` is the declared schema; after :meth:`fit`, :attr:`fitted_schema` also holds what
    training decided (a multilabel task's tags), and is the one saved with a run.
    """

    def __init__(self, schema: Schema):
        self.schema = schema
        self.transformers = build_transformers(schema)
        self.label_encoders: dict[str, LabelEncoder] = {t.name: label_encoder(t) for t in schema.tasks}
        self.fitted = False

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, split: str = "train") -> "Preprocessor":
        self._require_columns(train, [f.name for f in self.schema.features] + [t.label for t in self.schema.tasks], split)
        for transformer in self.transformers.values():
            transformer.fit(train, split)
        for task in self.schema.tasks:
            self.label_encoders[task.name].fit(self._in_sample_space(train, task, split), split)
        self.fitted = True
        return self

    def fit_stream(self, chunks, split: str = "train") -> "Preprocessor":
        """Fit on the training split given as a sequence of frames (a dataset larger than memory),
        in one pass; every streaming kind ends in the state :meth:`fit` gives on the whole frame."""
        blocked = sorted({f"{t.kind} ({', '.join(t.columns)})" for t in self.transformers.values() if not t.streaming})
        blocked += [f"multilabel task {t.name}" for t in self.schema.tasks if t.kind == "multilabel"]
        if blocked:
            raise SchemaError(
                f"data.out_of_core: {'; '.join(blocked)} cannot be fit one chunk at a time (only categorical and "
                f"numeric features, and tasks that are not multilabel); drop them or set data.out_of_core.enabled=false"
            )
        for transformer in self.transformers.values():
            transformer.begin_fit()
        rows = 0
        for chunk in chunks:
            self._require_columns(chunk, [f.name for f in self.schema.features] + [t.label for t in self.schema.tasks],
                                  split)
            for transformer in self.transformers.values():
                transformer.partial_fit(chunk, split)
            rows += len(chunk)
        if not rows:
            raise SchemaError(f"{split}: the split has no rows; check the file and the split rule")
        for transformer in self.transformers.values():
            transformer.end_fit()
        self.fitted = True
        return self

    @property
    def fitted_schema(self) -> Schema:
        return self.schema.with_fitted_tasks({t: enc.fitted_task() for t, enc in self.label_encoders.items()})

    # -- transforming ----------------------------------------------------------------------
    def transform(self, frame: pd.DataFrame, split: str = "data", with_labels: bool = True) -> TensorTable:
        """Tensors for ``frame``; ``split`` only names the frame in error messages."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.transform called before fit (or load)")
        self._require_columns(frame, [f.name for f in self.schema.features], split)
        features = {key: t.transform(frame, split) for key, t in self.transformers.items()}
        labels, masks = {}, {}
        if with_labels:
            for task in self.schema.tasks:
                labels[task.name], mask = self._labels(frame, task, split)
                if mask is not None:
                    masks[task.name] = mask
        domain = torch.from_numpy(frame[DOMAIN].to_numpy(np.float32, copy=True)) if DOMAIN in frame.columns else None
        return TensorTable(features, labels, masks, num_rows=len(frame), domain=domain)

    def _mask(self, frame: pd.DataFrame, task: TaskSpec, split: str) -> np.ndarray | None:
        """The task's sample space: its mask column, and only labelled rows where the data marks
        some rows unlabelled (a target domain's rows without labels, :data:`LABELLED`): those
        enter no task's loss, metric or label fitting."""
        declared = self._declared_mask(frame, task, split)
        if LABELLED not in frame.columns:
            return declared
        labelled = frame[LABELLED].to_numpy(dtype=bool, copy=True)
        return labelled if declared is None else declared & labelled

    def _declared_mask(self, frame: pd.DataFrame, task: TaskSpec, split: str) -> np.ndarray | None:
        if not task.mask:
            return None
        self._require_columns(frame, [task.mask], split)
        values = frame[task.mask]
        m = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isin(m, (0.0, 1.0))  # NaN and text (coerced to NaN) included
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"{split}: mask column {task.mask!r} of task {task.name!r} must hold 0 or 1 on every row; row "
                f"{values.index[pos]} holds {shown(values.iloc[pos])} ({int(bad.sum())} such rows); write 1 where the "
                f"task applies and 0 where it does not"
            )
        return m.astype(bool)

    def _in_sample_space(self, frame: pd.DataFrame, task: TaskSpec, split: str) -> pd.Series:
        mask = self._mask(frame, task, split)
        values = frame[task.label]
        return values if mask is None else values[mask]

    def _labels(self, frame: pd.DataFrame, task: TaskSpec, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels of the task's sample space; rows outside it hold zeros (never read: the mask
        keeps them out of the loss and the metrics)."""
        self._require_columns(frame, [task.label], split)
        mask = self._mask(frame, task, split)
        encoder = self.label_encoders[task.name]
        if mask is None:
            return encoder.transform(frame[task.label], split), None
        inside = encoder.transform(frame[task.label][mask], split)
        full = torch.zeros((len(frame), *inside.shape[1:]), dtype=inside.dtype)
        full[torch.from_numpy(mask)] = inside
        return full, torch.from_numpy(mask)

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
            "format": STATE_FORMAT,
            "columns": {k: {"kind": t.kind, "features": t.columns, "state": t.state_dict()}
                        for k, t in self.transformers.items()},
            "labels": {task: enc.state_dict() for task, enc in self.label_encoders.items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, schema: Schema) -> "Preprocessor":
        state = json.loads(Path(path).read_text())
        if state.get("format") != STATE_FORMAT:
            raise SchemaError(
                f"{path}: preprocessing saved by an older mtlrec (format {state.get('format', 1)}, this one reads "
                f"{STATE_FORMAT}); retrain the run with this version to score with it"
            )
        pre = cls(schema)
        saved = {k: (c["kind"], list(c["features"])) for k, c in state["columns"].items()}
        expected = {k: (t.kind, t.columns) for k, t in pre.transformers.items()}
        if saved != expected or set(state["labels"]) != set(pre.label_encoders):
            raise SchemaError(
                f"{path}: saved preprocessing is for inputs {saved} and tasks {sorted(state['labels'])}, but the "
                f"schema has {expected} and {sorted(pre.label_encoders)}; use the schema the run was trained with"
            )
        for key, transformer in pre.transformers.items():
            transformer.load_state_dict(state["columns"][key]["state"])
        for task, enc in pre.label_encoders.items():
            enc.load_state_dict(state["labels"][task])
        pre.fitted = True
        return pre
