"""Categorical fields: one fused embedding table for all of them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlrec.models.inputs.lookup import lookup


class CategoricalEmbedding(nn.Module):
    """Looks up all categorical fields in one table (ids already carry per-field offsets).

    One table instead of a ModuleList of per-field tables is a single gather per batch (the trick
    of MTReclib). Input ``[B, F]`` global ids; output ``[B, F·dim]``, the fields' embeddings side
    by side.
    """

    def __init__(self, field_sizes: Sequence[int], embedding_dim: int = 8):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"encoder.embedding_dim must be >= 1, got {embedding_dim}")
        self.num_fields = len(field_sizes)
        self.table = nn.Embedding(max(sum(field_sizes), 1), embedding_dim)
        self.output_dim = self.num_fields * embedding_dim
        self.reset_parameters()

    @property
    def vocabulary_table(self) -> nn.Parameter:
        """The table whose rows are the transformer's ``row_keys`` (remapped by ``init_from``)."""
        return self.table.weight

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, ids: Tensor) -> Tensor:
        return lookup(self.table.weight, ids).flatten(1)  # a faster backward on CPU (lookup.py)
