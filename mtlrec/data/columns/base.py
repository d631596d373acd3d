"""The contract of a column transformer: one class per feature kind.

A transformer is fit on the training split only, turns any split's columns into one tensor, and
saves its fitted state as plain JSON with the run (so :class:`mtlrec.predict.RunScorer` transforms
tomorrow's file exactly as in training). It also tells the input encoder what it needs to build its
layer (:meth:`encoder_args`). A *fused* kind (categorical, numeric) puts all of its features in one
tensor, so a batch costs one gather and one lookup for all of them; other kinds hold one feature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd
from torch import Tensor

from mtlrec.data.schema import FeatureSpec, SchemaError


class ColumnTransformer(ABC):
    kind: ClassVar[str]
    fused: ClassVar[bool] = False
    # option -> default; the only options a feature of this kind accepts
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, specs: Sequence[FeatureSpec]):
        if not specs or (not self.fused and len(specs) != 1):
            raise ValueError(f"{type(self).__name__} takes {'>= 1' if self.fused else 'exactly 1'} feature")
        self.specs = list(specs)
        self.fitted = False

    @property
    def key(self) -> str:
        """The name of this transformer's tensor in a batch: the kind for a fused kind, else the feature."""
        return self.kind if self.fused else self.specs[0].name

    @property
    def columns(self) -> list[str]:
        return [s.name for s in self.specs]

    def option(self, spec: FeatureSpec, name: str) -> Any:
        return spec.options.get(name, self.option_defaults[name])

    @classmethod
    def check_options(cls, feature: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(cls.option_defaults))
        if unknown:
            allowed = ", ".join(sorted(cls.option_defaults)) or "none"
            raise SchemaError(f"feature {feature!r} ({cls.kind}): unknown option(s) {unknown}; options are: {allowed}")

    # True for kinds whose state can be learnt one chunk at a time (begin_fit/partial_fit/end_fit),
    # which is what a dataset larger than memory needs (mtlrec.data.columnar)
    streaming: ClassVar[bool] = False

    def fit(self, frame: pd.DataFrame, split: str) -> None:
        """Learn the state from the training frame (a streaming kind: as one chunk)."""
        if not self.streaming:
            raise NotImplementedError
        self.begin_fit()
        self.partial_fit(frame, split)
        self.end_fit()

    def begin_fit(self) -> None:
        raise NotImplementedError(f"{self.kind} features cannot be fit one chunk at a time")

    def partial_fit(self, frame: pd.DataFrame, split: str) -> None:
        raise NotImplementedError(f"{self.kind} features cannot be fit one chunk at a time")

    def end_fit(self) -> None:
        raise NotImplementedError(f"{self.kind} features cannot be fit one chunk at a time")

    @abstractmethod
    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        """``[N, ...]`` tensor for the frame's rows (``split`` names the data in errors)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def encoder_args(self) -> dict[str, Any]:
        """What this kind's encoder layer needs (vocabulary sizes, number of fields, …)."""
