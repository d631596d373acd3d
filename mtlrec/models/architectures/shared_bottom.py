"""Shared-Bottom (Caruana 1997): one shared MLP under per-task towers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.mlp import MLP
from mtlrec.models.inputs.encoder import InputEncoder


class SharedBottom(Architecture):
    """Encoder → shared bottom MLP → a tower per task (hard parameter sharing)."""

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        bottom_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (8,),
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        if not bottom_units:
            raise ValueError("arch.bottom_units must list at least one layer width")
        self.encoder = encoder
        self.bottom = MLP(self.input_dim, bottom_units, dropout)
        self.towers = self.make_towers(self.bottom.output_dim, tower_units, dropout)

    def forward(self, batch: Batch) -> TaskOutputs:
        x = self.encoder(batch)
        shared = self.bottom(x)
        return self.outputs({t: tower(shared) for t, tower in self.towers.items()}, features=x, shared=shared)

    def shared_width(self) -> int:
        return self.bottom.output_dim

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.bottom.last_linear().parameters())
