"""OMoE (the MMoE paper's one-gate baseline): shared experts mixed by a single shared gate."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.gate import Gate, mix


class OMoE(Architecture):
    """Like MMoE, but every task sees the same mixture (one gate), so only towers differ."""

    def __init__(
        self,
        schema: Schema,
        field_sizes: Sequence[int],
        embedding_dim: int = 8,
        num_experts: int = 8,
        expert_units: Sequence[int] = (16,),
        tower_units: Sequence[int] = (8,),
        gate_temperature: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__(schema, field_sizes)
        self.embedding = self.make_embedding(embedding_dim)
        in_dim = self.embedding.output_dim
        self.experts = ExpertLayer(num_experts, in_dim, expert_units, dropout)
        self.gate = Gate(in_dim, num_experts, gate_temperature)
        self.towers = self.make_towers(self.experts.output_dim, tower_units, dropout)

    def forward(self, batch: dict) -> TaskOutputs:
        x = self.embedding(batch)
        weights = self.gate(x)
        shared = mix(self.experts(x), weights)
        return self.outputs({t: tower(shared) for t, tower in self.towers.items()}, {"shared": weights})

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return self.experts.last_layer_parameters()
