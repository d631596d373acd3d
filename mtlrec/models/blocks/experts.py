"""A layer of E experts run as one batched op: stacked weights, one einsum per depth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ExpertLayer(nn.Module):
    """E independent ReLU MLPs with identical shapes, evaluated together.

    Weights of depth ``l`` are one tensor ``[E, in, out]``; the forward pass is an einsum per
    depth rather than a Python loop over experts. The input is either shared by all experts
    (``[B, in]``), given per expert (``[B, E, in]``), or given per group of experts (``[B, G, in]``
    with E divisible by G, e.g. PLE's task experts each reading their task's input).
    Output: ``[B, E, units[-1]]``. Each expert is initialised like ``nn.Linear``.
    """

    def __init__(self, num_experts: int, in_dim: int, units: Sequence[int], dropout: float = 0.0):
        super().__init__()
        if num_experts < 1 or not units:
            raise ValueError(f"an expert layer needs >= 1 expert and >= 1 hidden width, got {num_experts}, {units}")
        self.num_experts, self.output_dim = num_experts, units[-1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for width in units:
            bound = 1.0 / math.sqrt(in_dim)
            self.weights.append(nn.Parameter(torch.empty(num_experts, in_dim, width).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_experts, width).uniform_(-bound, bound)))
            in_dim = width
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(torch.relu(self._first_layer(x) + self.biases[0]))
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:]):
            h = self.dropout(torch.relu(torch.einsum("bei,eio->beo", h, w) + b))
        return h

    def _first_layer(self, x: Tensor) -> Tensor:
        w = self.weights[0]
        if x.dim() == 2:  # one input for all experts
            return torch.einsum("bi,eio->beo", x, w)
        groups = x.shape[1]
        if groups == self.num_experts:  # one input per expert
            return torch.einsum("bei,eio->beo", x, w)
        if self.num_experts % groups:
            raise ValueError(f"{groups} input groups cannot feed {self.num_experts} experts evenly")
        # one input per group of experts (PLE: each task's experts read that task's input)
        grouped = w.view(groups, self.num_experts // groups, *w.shape[1:])
        return torch.einsum("bgi,geio->bgeo", x, grouped).flatten(1, 2)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [self.weights[-1], self.biases[-1]]
