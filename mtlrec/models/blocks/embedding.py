"""Input layer: every categorical field in one fused embedding table, numerics passed through."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FeatureEmbedding(nn.Module):
    """Looks up all categorical fields in one table (ids already carry per-field offsets).

    One table instead of a ModuleList of per-field tables is a single gather per batch (the trick
    of MTReclib). The output is ``[B, F_cat·dim + F_num]``: embeddings flattened, then numerics.
    """

    def __init__(self, field_sizes: Sequence[int], num_numeric: int, embedding_dim: int):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_fields, self.num_numeric = len(field_sizes), num_numeric
        self.table = nn.Embedding(max(sum(field_sizes), 1), embedding_dim)
        nn.init.normal_(self.table.weight, std=0.05)
        self.output_dim = self.num_fields * embedding_dim + num_numeric
        if self.output_dim == 0:
            raise ValueError("the schema has no features")

    def forward(self, batch: dict) -> Tensor:
        cat = batch["categorical"]
        parts = [self.table(cat).flatten(1)] if self.num_fields else []
        if self.num_numeric:
            parts.append(batch["numeric"])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
