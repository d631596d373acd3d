"""Categorical features: a vocabulary per field, all fields as ids into one fused table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.columns.base import ColumnTransformer

OOV = 0  # id 0 of every field is "not seen in training"
MISSING = "<missing>"  # a missing categorical value is a category of its own


def category_keys(values: pd.Series) -> pd.Series:
    """Categorical values as stable string keys, the same in every split and at scoring time.

    A float value that is a whole number is keyed as the integer (``7.0`` -> ``"7"``), value by
    value: an integer-coded column is float in a split where it has a gap, and whether a split
    holds a non-integer (``6.5``) must not change the keys of the others.
    """
    keys = values.astype(str)
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & (values == np.round(values))
        if whole.any():
            keys = keys.where(~whole, values[whole].astype("int64").astype(str))
    return keys.where(values.notna(), MISSING)


class CategoricalColumns(ColumnTransformer):
    """Every categorical field as one ``[N, F]`` int64 matrix of *global* ids.

    Field j's ids are offset by the sizes of the fields before it, so one embedding table serves
    all fields with a single gather per batch. Values seen fewer than ``min_count`` times in
    training, and values never seen, share the field's out-of-vocabulary id.
    """

    kind = "categorical"
    fused = True
    streaming = True
    option_defaults = {"min_count": 1}

    def begin_fit(self) -> None:
        self._counts: dict[str, pd.Series] = {s.name: pd.Series(dtype="int64") for s in self.specs}

    def partial_fit(self, frame: pd.DataFrame, split: str) -> None:
        """Counts add up chunk by chunk, and the vocabulary is sorted: any chunking gives the same ids."""
        for spec in self.specs:
            counts = category_keys(frame[spec.name]).value_counts()
            self._counts[spec.name] = self._counts[spec.name].add(counts, fill_value=0).astype("int64")

    def end_fit(self) -> None:
        self.vocabularies: dict[str, list[str]] = {}
        for spec in self.specs:
            counts = self._counts.pop(spec.name)
            kept = counts[counts >= int(self.option(spec, "min_count"))].index
            self.vocabularies[spec.name] = sorted(map(str, kept))
        self._indexes: dict[str, pd.Index] = {}
        self.fitted = True

    @property
    def field_sizes(self) -> list[int]:
        """Ids per field, OOV included, in schema order."""
        return [len(self.vocabularies[s.name]) + 1 for s in self.specs]

    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        offsets = np.cumsum([0] + self.field_sizes[:-1])
        ids = np.empty((len(frame), len(self.specs)), dtype=np.int64)
        for j, spec in enumerate(self.specs):
            codes = self._index(spec.name).get_indexer(category_keys(frame[spec.name]))
            ids[:, j] = codes.astype(np.int64) + 1 + offsets[j]  # unseen -> -1 -> OOV (0)
        return torch.from_numpy(ids)

    def _index(self, name: str) -> pd.Index:
        """The field's vocabulary as an index, built once: its hash table is reused by every chunk
        and every split (rebuilding it per call cost more than the lookups on large vocabularies)."""
        cache = self.__dict__.setdefault("_indexes", {})
        if name not in cache:
            cache[name] = pd.Index(self.vocabularies[name], dtype=object)
        return cache[name]

    def state_dict(self) -> dict[str, Any]:
        return {"vocabularies": self.vocabularies}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.vocabularies = {k: list(v) for k, v in state["vocabularies"].items()}
        self._indexes = {}
        self.fitted = True

    def encoder_args(self) -> dict[str, Any]:
        return {"field_sizes": self.field_sizes}
