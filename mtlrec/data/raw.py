"""What every dataset builder returns: a :class:`Schema` plus raw train/val/test frames.

Builders read the published file format and derive label columns; they do no numeric
preprocessing (that is fit on the training split only, by :mod:`mtlrec.data.preprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from mtlrec.data.schema import Schema

SPLITS = ("train", "val", "test")
# reserved columns a builder may add (data.domain, :mod:`mtlrec.data.tabular.domains`): each row's
# domain (1.0 target, 0.0 source) and, in train, whether its labels may be used
DOMAIN = "__domain__"
LABELLED = "__labelled__"


@dataclass
class RawDataset:
    """A schema and one DataFrame per split (``train``, ``val``, ``test``).

    ``sources`` optionally names where each split came from (a file, a split rule), so an error
    about a split's rows names the file the user has to fix.
    """

    schema: Schema
    splits: dict[str, pd.DataFrame]
    name: str = "dataset"
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"dataset {self.name!r} lacks the split(s) {missing}; a builder must return {SPLITS}")

    def where(self, split: str) -> str:
        """How errors name a split: its source when known, else ``dataset/split``."""
        source = self.sources.get(split)
        return f"{self.name}/{split} ({source})" if source else f"{self.name}/{split}"
