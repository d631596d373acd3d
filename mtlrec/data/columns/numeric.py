"""Numeric features: standardised with the training mean and std, missing values imputed."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.columns.base import ColumnTransformer
from mtlrec.data.schema import SchemaError


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class BlockMoments:
    """Mean and (population) std of a column seen in chunks, bit for bit the same however the
    rows are chunked: values are regrouped into fixed blocks of ``BLOCK`` rows, each block's
    ``nanmean``/``nanvar`` is taken as numpy does, and blocks are merged in order (Chan et al.
    1979). Up to one block (every in-memory dataset here) it *is* ``np.nanmean``/``np.nanstd``.
    Missing values are left out of both."""

    BLOCK = 1 << 20

    def __init__(self) -> None:
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._blocks: list[tuple[int, float, float]] = []  # (count, mean, var) per block

    def add(self, values: np.ndarray) -> None:
        self._pending.append(np.asarray(values, dtype=np.float64))
        self._pending_rows += len(values)
        if self._pending_rows >= self.BLOCK:
            buffer = np.concatenate(self._pending)
            full = len(buffer) // self.BLOCK * self.BLOCK
            for start in range(0, full, self.BLOCK):
                self._block(buffer[start : start + self.BLOCK])
            self._pending, self._pending_rows = [buffer[full:]], len(buffer) - full

    def _block(self, x: np.ndarray) -> None:
        n = int(np.count_nonzero(~np.isnan(x)))
        if n:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self._blocks.append((n, float(np.nanmean(x)), float(np.nanvar(x))))

    def finish(self) -> tuple[float, float]:
        if self._pending_rows:
            self._block(np.concatenate(self._pending))
        self._pending, self._pending_rows = [], 0
        if not self._blocks:
            return float("nan"), float("nan")
        if len(self._blocks) == 1:
            n, mean, var = self._blocks[0]
            return mean, float(np.sqrt(var))
        n, mean, m2 = 0, 0.0, 0.0
        for nb, mb, vb in self._blocks:
            total = n + nb
            delta = mb - mean
            mean += delta * nb / total
            m2 += vb * nb + delta * delta * n * nb / total
            n = total
        return mean, float(np.sqrt(m2 / n))


class NumericColumns(ColumnTransformer):
    """Every numeric field as one ``[N, F]`` float32 matrix, ``(x - mean) / std`` of training.

    ``log1p`` applies ``sign(x)·log(1+|x|)`` first: heavy-tailed money columns (capital gains,
    dividends) otherwise squash every other value into one bin. What a gap becomes is the
    feature's ``missing`` policy: ``impute`` (the training mean, i.e. 0; the default),
    ``indicator`` (the mean, plus a 0/1 column "was missing" after the fields, so the model can
    tell an imputed mean from a real one) or ``error`` (one line naming the column and the first
    row). An infinite value is an error unless ``infinite: missing`` (then it is a gap, and the
    ``missing`` policy applies): left in, it would poison every batch it is in.
    """

    kind = "numeric"
    fused = True
    streaming = True
    option_defaults = {"log1p": False, "missing": "impute", "infinite": "error"}
    CHOICES = {"missing": ("impute", "indicator", "error"), "infinite": ("error", "missing")}

    @classmethod
    def check_options(cls, feature: str, options: Mapping[str, Any]) -> None:
        super().check_options(feature, options)
        for name, allowed in cls.CHOICES.items():
            if name in options and options[name] not in allowed:
                raise SchemaError(f"feature {feature!r} (numeric): {name}={options[name]!r} is not one of "
                                  f"{', '.join(allowed)}")

    @property
    def indicated(self) -> list[str]:
        """The features with a "was missing" column, in order (after the values)."""
        return [s.name for s in self.specs if self.option(s, "missing") == "indicator"]

    def begin_fit(self) -> None:
        self._moments = {spec.name: BlockMoments() for spec in self.specs}

    def partial_fit(self, frame: pd.DataFrame, split: str) -> None:
        for spec in self.specs:
            self._moments[spec.name].add(self._values(frame, spec, split))

    def end_fit(self) -> None:
        self.stats: dict[str, tuple[float, float]] = {}
        for spec in self.specs:
            mean, std = self._moments.pop(spec.name).finish()
            self.stats[spec.name] = (mean, std if std > 0 else 1.0)
        self.fitted = True

    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        indicated = self.indicated
        out = np.empty((len(frame), len(self.specs) + len(indicated)), dtype=np.float32)
        for j, spec in enumerate(self.specs):
            mean, std = self.stats[spec.name]
            values = self._values(frame, spec, split)
            if spec.name in indicated:
                out[:, len(self.specs) + indicated.index(spec.name)] = np.isnan(values)
            out[:, j] = np.nan_to_num((values - mean) / std, nan=0.0)
        return torch.from_numpy(out)

    def _values(self, frame: pd.DataFrame, spec, split: str) -> np.ndarray:
        column = spec.name
        try:
            values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError) as err:
            raise SchemaError(
                f"{split}: numeric feature {column!r} holds non-numeric values ({err}); declare it categorical"
            ) from err
        if np.isinf(values).any():
            if self.option(spec, "infinite") == "missing":
                values = np.where(np.isinf(values), np.nan, values)
            else:
                row = frame.index[int(np.flatnonzero(np.isinf(values))[0])]
                raise SchemaError(
                    f"{split}: numeric feature {column!r} holds an infinite value (first at row {row}); clean it, "
                    f"or declare {{name: {column}, infinite: missing}} to treat it as a gap"
                )
        if self.option(spec, "missing") == "error" and np.isnan(values).any():
            row = frame.index[int(np.flatnonzero(np.isnan(values))[0])]
            raise SchemaError(
                f"{split}: numeric feature {column!r} has a missing value (first at row {row}) and its policy is "
                f"missing: error; fill the gaps, or declare missing: impute (the training mean) or missing: indicator"
            )
        return _signed_log1p(values) if self.option(spec, "log1p") else values

    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stats = {k: (float(v[0]), float(v[1])) for k, v in state["stats"].items()}
        self.fitted = True

    def encoder_args(self) -> dict[str, Any]:
        return {"num_fields": len(self.specs) + len(self.indicated)}
