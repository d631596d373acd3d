"""Token-bag features (multi-hot lists, bags of words): pooled embeddings of a padded id matrix."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtlrec.data.columns.tokens import PAD


class TokenBag(nn.Module):
    """``EmbeddingBag`` over a ``[B, L]`` id matrix padded with id 0.

    Padding is left out of the pooling (``padding_idx``), so a row's ``mean`` is over its own
    tokens only and an empty row pools to the zero vector. Mean pooling by default: a long review
    and a short one then land on the same scale; ``sum`` keeps the count (e.g. number of tags).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int = 8, mode: str = "mean"):
        super().__init__()
        if mode not in ("mean", "sum", "max"):
            raise ValueError(f"encoder.kinds.<kind>.mode must be mean, sum or max, got {mode!r}")
        self.bag = nn.EmbeddingBag(num_embeddings, embedding_dim, mode=mode, padding_idx=PAD)
        self.output_dim = embedding_dim
        self.reset_parameters()

    @property
    def vocabulary_table(self) -> nn.Parameter:
        """The table whose rows are the transformer's ``row_keys`` (remapped by ``init_from``)."""
        return self.bag.weight

    def reset_parameters(self) -> None:
        nn.init.normal_(self.bag.weight, std=0.05)
        with torch.no_grad():
            self.bag.weight[PAD].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        return self.bag(ids)
