"""Numeric features: standardised with the training mean and std, missing values imputed."""

from __future__ import annotations

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


class NumericColumns(ColumnTransformer):
    """Every numeric field as one ``[N, F]`` float32 matrix, ``(x - mean) / std`` of training.

    ``log1p`` applies ``sign(x)·log(1+|x|)`` first: heavy-tailed money columns (capital gains,
    dividends) otherwise squash every other value into one bin. A missing value becomes 0, the
    training mean; an infinite value is an error (it would poison every batch it is in).
    """

    kind = "numeric"
    fused = True
    option_defaults = {"log1p": False}

    def fit(self, frame: pd.DataFrame, split: str) -> None:
        self.stats: dict[str, tuple[float, float]] = {}
        for spec in self.specs:
            values = self._values(frame, spec, split)
            mean, std = float(np.nanmean(values)), float(np.nanstd(values))
            self.stats[spec.name] = (mean, std if std > 0 else 1.0)
        self.fitted = True

    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        out = np.empty((len(frame), len(self.specs)), dtype=np.float32)
        for j, spec in enumerate(self.specs):
            mean, std = self.stats[spec.name]
            out[:, j] = np.nan_to_num((self._values(frame, spec, split) - mean) / std, nan=0.0)
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
            row = frame.index[int(np.flatnonzero(np.isinf(values))[0])]
            raise SchemaError(
                f"{split}: numeric feature {column!r} holds an infinite value (first at row {row}); "
                f"clean it or mark it missing (NaN is imputed with the training mean)"
            )
        return _signed_log1p(values) if self.option(spec, "log1p") else values

    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stats = {k: (float(v[0]), float(v[1])) for k, v in state["stats"].items()}
        self.fitted = True

    def encoder_args(self) -> dict[str, Any]:
        return {"num_fields": len(self.specs)}
