"""Token-bag features: a delimited list (multi-hot tags, genres) or free text (bag of words).

Both become a padded ``[N, L]`` int64 matrix of token ids, pooled by an ``EmbeddingBag`` in the
encoder. Id 0 is padding (ignored by the pooling), id 1 is "a token not in the training
vocabulary", real tokens start at 2. An empty or missing cell is all padding, so it pools to the
zero vector. The vocabulary is fit on training only. ``L`` is the longest row of the frame being
transformed, capped by ``max_tokens`` (the first tokens kept): a set-valued feature loses nothing
unless a cap is asked for, and each split's width is its own (pooling does not depend on it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.columns.base import ColumnTransformer
from mtlrec.data.messages import shown
from mtlrec.data.schema import SchemaError

PAD, OOV = 0, 1
FIRST_TOKEN_ID = 2


class TokenBagColumn(ColumnTransformer):
    """The shared machinery; subclasses only say how a cell becomes tokens (:meth:`tokens`)."""

    option_defaults = {"min_count": 1, "max_vocab": None, "max_tokens": None}

    def tokens(self, column: pd.Series) -> pd.Series:
        """One list of token strings per row (an empty list for an empty or missing cell)."""
        raise NotImplementedError

    @property
    def spec(self):
        return self.specs[0]

    def fit(self, frame: pd.DataFrame, split: str) -> None:
        rows = self.tokens(frame[self.spec.name])
        counts = Counter(t for row in rows for t in row)
        min_count, max_vocab = int(self.option(self.spec, "min_count")), self.option(self.spec, "max_vocab")
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_vocab is not None:
            kept = kept[: int(max_vocab)]
        self.vocabulary = sorted(kept)
        self.fitted = True

    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        index = {t: i + FIRST_TOKEN_ID for i, t in enumerate(self.vocabulary)}
        rows = self.tokens(frame[self.spec.name])
        cap = self.option(self.spec, "max_tokens")
        longest = max((len(r) for r in rows), default=0)
        width = max(1, min(longest, int(cap)) if cap is not None else longest)
        ids = np.full((len(rows), width), PAD, dtype=np.int64)
        for r, row in enumerate(rows):
            row = row[:width]
            if row:
                ids[r, : len(row)] = [index.get(t, OOV) for t in row]
        return torch.from_numpy(ids)

    def state_dict(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.vocabulary = list(state["vocabulary"])
        self.fitted = True

    def encoder_args(self) -> dict[str, Any]:
        return {"num_embeddings": len(self.vocabulary) + FIRST_TOKEN_ID}

    def row_keys(self) -> list[tuple[str, str]]:
        """What each embedding row stands for (padding, out-of-vocabulary, then each token): how
        ``init_from`` finds a token's row in another domain's table."""
        return [(None, "pad"), (None, "oov")] + [("token", t) for t in self.vocabulary]


class MultiHotColumn(TokenBagColumn):
    """A delimited list per cell (``"drama|comedy"``): each distinct entry is one token.

    Entries are stripped of surrounding spaces; empty entries (``"a||b"``) are skipped; an entry
    listed twice in one cell counts once (it is a set). A cell that is not text (a number in a tag
    column) is an error naming the row, since it usually means the wrong column.
    """

    kind = "multi_hot"
    option_defaults = {**TokenBagColumn.option_defaults, "separator": "|"}

    def tokens(self, column: pd.Series) -> pd.Series:
        sep = str(self.option(self.spec, "separator"))
        present = column.notna()
        bad = present & ~column.map(lambda v: isinstance(v, str))
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise SchemaError(
                f"multi-hot feature {self.spec.name!r}: row {column.index[pos]} holds {shown(column.iloc[pos])}, not a "
                f"{sep!r}-separated list; fix the cell or declare the column numeric/categorical"
            )
        out = column.fillna("").map(lambda cell: list(dict.fromkeys(e.strip() for e in cell.split(sep) if e.strip())))
        return out


class TextColumn(TokenBagColumn):
    """Free text as a bag of words: lower-cased runs of letters, digits and apostrophes.

    A small, dependency-free tokenizer on purpose: review titles and bodies in retail data are
    short, and a bag of words through the same embedding machinery as tags is the baseline text
    encoder the field compares against. Defaults keep words seen at least twice in training and
    the first 64 words of a cell.
    """

    kind = "text"
    option_defaults = {"min_count": 2, "max_vocab": 30000, "max_tokens": 64, "lowercase": True}
    _WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

    def tokens(self, column: pd.Series) -> pd.Series:
        text = column.fillna("").astype(str)
        if self.option(self.spec, "lowercase"):
            text = text.str.lower()
        return text.map(self._WORD.findall)
