"""OMoE (the MMoE paper's one-gate baseline): shared experts mixed by a single shared gate."""

from __future__ import annotations

from torch import nn

from mtlrec.data.table import Batch
from mtlrec.models.architectures.mixture import MixtureOfExperts
from mtlrec.models.base import TaskOutputs
from mtlrec.models.blocks.gate import Gate, mix


class OMoE(MixtureOfExperts):
    """Like MMoE, but every task sees the same mixture (one gate), so only towers differ."""

    def build_gates(self, in_dim: int, num_experts: int, temperature: float) -> None:
        self.gate = Gate(in_dim, num_experts, temperature)

    def forward(self, batch: Batch) -> TaskOutputs:
        x = self.encoder(batch)
        weights = self.gate(x)
        shared = mix(self.experts(x), weights)
        return self.outputs({t: tower(shared) for t, tower in self.towers.items()}, {"shared": weights}, features=x,
                            shared=shared)

    def shared_width(self) -> int:
        return self.experts.output_dim

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers]

    def part_modules(self) -> dict[str, list[nn.Module]]:
        return {"gates": [self.gate], "towers": [self.towers]}
