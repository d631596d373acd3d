"""Shared-Bottom (Caruana 1997): one shared MLP under per-task towers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.mlp import MLP


class SharedBottom(Architecture):
    """Embedding → shared bottom MLP → a tower per task (hard parameter sharing)."""

    def __init__(
        self,
        schema: Schema,
        field_sizes: Sequence[int],
        embedding_dim: int = 8,
        bottom_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (8,),
        dropout: float = 0.0,
    ):
        super().__init__(schema, field_sizes)
        if not bottom_units:
            raise ValueError("arch.bottom_units must list at least one layer width")
        self.embedding = self.make_embedding(embedding_dim)
        self.bottom = MLP(self.embedding.output_dim, bottom_units, dropout)
        self.towers = self.make_towers(self.bottom.output_dim, tower_units, dropout)

    def forward(self, batch: dict) -> TaskOutputs:
        shared = self.bottom(self.embedding(batch))
        return self.outputs({t: tower(shared) for t, tower in self.towers.items()})

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.bottom.last_linear().parameters())
