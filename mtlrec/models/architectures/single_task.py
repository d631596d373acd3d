"""Independent networks, one per task: the no-sharing baseline of the MMoE paper."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.mlp import MLP, Tower


class SingleTask(Architecture):
    """Each task has its own embedding table, hidden MLP and head; nothing is shared."""

    def __init__(
        self,
        schema: Schema,
        field_sizes: Sequence[int],
        embedding_dim: int = 8,
        hidden_units: Sequence[int] = (64,),
        tower_units: Sequence[int] = (8,),
        dropout: float = 0.0,
    ):
        super().__init__(schema, field_sizes)
        self.nets = nn.ModuleDict()
        for task in self.task_names:
            embedding = self.make_embedding(embedding_dim)
            body = MLP(embedding.output_dim, hidden_units, dropout)
            tower = Tower(body.output_dim, tower_units, self.logit_dims[task], dropout)
            self.nets[task] = nn.ModuleDict({"embedding": embedding, "body": body, "tower": tower})

    def forward(self, batch: dict) -> TaskOutputs:
        logits = {t: net["tower"](net["body"](net["embedding"](batch))) for t, net in self.nets.items()}
        return self.outputs(logits)

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.nets]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return []

    def task_networks(self) -> dict[str, nn.Module]:
        return dict(self.nets)
