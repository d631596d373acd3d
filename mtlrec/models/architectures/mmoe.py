"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.gate import Gate, mix


class MMoE(Architecture):
    """Embedding → E shared experts; task k's tower sees Σ_e g_k(x)_e·f_e(x) (eq. 5–6).

    No extra shared bottom sits under the experts (some variants hide one; the paper has none).
    """

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
        self.gates = nn.ModuleDict({t: Gate(in_dim, num_experts, gate_temperature) for t in self.task_names})
        self.towers = self.make_towers(self.experts.output_dim, tower_units, dropout)

    def forward(self, batch: dict) -> TaskOutputs:
        x = self.embedding(batch)
        experts = self.experts(x)
        gates = {t: gate(x) for t, gate in self.gates.items()}
        logits = {t: self.towers[t](mix(experts, gates[t])) for t in self.task_names}
        return self.outputs(logits, gates)

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.gates, self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return self.experts.last_layer_parameters()
