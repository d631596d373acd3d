"""Plain fully connected stacks: bottoms, experts' reference form, and towers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Sequential):
    """Linear → ReLU (→ Dropout) for each width in ``units``; identity when ``units`` is empty."""

    def __init__(self, in_dim: int, units: Sequence[int], dropout: float = 0.0):
        layers: list[nn.Module] = []
        for width in units:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        super().__init__(*layers)
        self.output_dim = in_dim

    def last_linear(self) -> nn.Linear | None:
        linears = [m for m in self if isinstance(m, nn.Linear)]
        return linears[-1] if linears else None


class Tower(nn.Module):
    """A task's own head: an MLP then a linear layer to the task's logits."""

    def __init__(self, in_dim: int, units: Sequence[int], out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.body = MLP(in_dim, units, dropout)
        self.head = nn.Linear(self.body.output_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
