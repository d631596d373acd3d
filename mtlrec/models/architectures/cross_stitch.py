"""Cross-Stitch networks (Misra et al., CVPR 2016): one column per task, mixed after every layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.inputs.encoder import InputEncoder


class CrossStitchUnit(nn.Module):
    """Learnable T×T mixing of the task columns: h'_k = Σ_j α_kj·h_j.

    Initialised near identity (α_kk = 0.9, the rest sharing 0.1) as the paper recommends, so
    columns start mostly separate and learn how much to share.
    """

    def __init__(self, num_tasks: int, self_weight: float = 0.9):
        super().__init__()
        off = (1.0 - self_weight) / max(num_tasks - 1, 1)
        alpha = torch.full((num_tasks, num_tasks), off)
        alpha.fill_diagonal_(self_weight if num_tasks > 1 else 1.0)
        self.alpha = nn.Parameter(alpha)

    def forward(self, h: Tensor) -> Tensor:  # [B, T, D]
        return torch.einsum("kj,bjd->bkd", self.alpha, h)


class CrossStitch(Architecture):
    """Shared embedding → per-task columns (run batched) with a cross-stitch unit after each layer."""

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        column_units: Sequence[int] = (32, 16),
        tower_units: Sequence[int] = (8,),
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        if not column_units:
            raise ValueError("arch.column_units must list at least one layer width")
        num_tasks = len(self.task_names)
        self.encoder = encoder
        in_dim, layers, units = self.input_dim, [], []
        for width in column_units:
            layers.append(ExpertLayer(num_tasks, in_dim, [width], dropout))  # one "expert" per task column
            units.append(CrossStitchUnit(num_tasks))
            in_dim = width
        self.columns, self.stitches = nn.ModuleList(layers), nn.ModuleList(units)
        self.towers = self.make_towers(in_dim, tower_units, dropout)

    def forward(self, batch: Batch) -> TaskOutputs:
        x = h = self.encoder(batch)
        for column, stitch in zip(self.columns, self.stitches):
            h = stitch(column(h))
        return self.outputs({t: self.towers[t](h[:, k]) for k, t in enumerate(self.task_names)}, features=x)

    def task_specific_modules(self) -> list[nn.Module]:
        # every stitch mixes all columns into every task, so each column serves all tasks:
        # only the towers are task-specific
        return [self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        # the last column layer: the final stitch mixes every column into every task, so all tasks'
        # losses reach all of it (the stitch's α itself is split row-wise between tasks)
        return self.columns[-1].last_layer_parameters()
