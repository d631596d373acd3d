"""What OMoE and MMoE share: an input encoder, one layer of shared experts, and a tower per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.inputs.encoder import InputEncoder


class MixtureOfExperts(Architecture):
    """Encoder → E shared experts (one batched op) → gate(s) → towers.

    Subclasses build their gate(s) in :meth:`build_gates`, called between the experts and the
    towers so parameters are created (and seeded) in the order of the network.
    """

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        num_experts: int = 8,
        expert_units: Sequence[int] = (16,),
        tower_units: Sequence[int] = (8,),
        gate_temperature: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        self.encoder = encoder
        self.experts = ExpertLayer(num_experts, self.input_dim, expert_units, dropout)
        self.build_gates(self.input_dim, num_experts, gate_temperature)
        self.towers = self.make_towers(self.experts.output_dim, tower_units, dropout)

    def build_gates(self, in_dim: int, num_experts: int, temperature: float) -> None:
        raise NotImplementedError

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return self.experts.last_layer_parameters()

    def last_shared_layer(self) -> nn.Module:
        return self.experts
