"""Independent networks, one per task: the no-sharing baseline of the MMoE paper."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.mlp import MLP, Tower
from mtlrec.models.inputs.encoder import InputEncoder


class SingleTask(Architecture):
    """Each task has its own input encoder, hidden MLP and head; nothing is shared.

    The first task takes the injected encoder; every other task gets a copy of it with its own
    freshly drawn weights.
    """

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        hidden_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (8,),
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        self.nets = nn.ModuleDict()
        for k, task in enumerate(self.task_names):
            own = encoder if k == 0 else encoder.fresh_copy()
            body = MLP(own.output_dim, hidden_units, dropout)
            tower = Tower(body.output_dim, tower_units, self.logit_dims[task], dropout)
            self.nets[task] = nn.ModuleDict({"encoder": own, "body": body, "tower": tower})

    def forward(self, batch: Batch) -> TaskOutputs:
        logits = {t: net["tower"](net["body"](net["encoder"](batch))) for t, net in self.nets.items()}
        return self.outputs(logits)

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.nets]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return []

    def part_modules(self) -> dict[str, list[nn.Module]]:
        # each task's own encoder, body (its "bottom") and tower
        nets = list(self.nets.values())
        return {"embeddings": [n["encoder"] for n in nets], "gates": [], "towers": [n["tower"] for n in nets]}

    def task_networks(self) -> dict[str, nn.Module]:
        return dict(self.nets)
