"""Softmax gates that mix experts, returning their weights for logging."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Gate(nn.Module):
    """``softmax(Wx / temperature)`` over ``num_experts`` (MMoE eq. 5; temperature as in Merlin)."""

    def __init__(self, in_dim: int, num_experts: int, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"gate temperature must be > 0, got {temperature}")
        self.linear = nn.Linear(in_dim, num_experts)
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(x) / self.temperature, dim=-1)


def mix(experts: Tensor, weights: Tensor) -> Tensor:
    """Σ_e weights[b, e]·experts[b, e, :] → ``[B, D]``."""
    return torch.einsum("be,bed->bd", weights, experts)
