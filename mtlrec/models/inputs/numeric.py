"""Numeric fields: already standardised by the preprocessing, passed through as they are."""

from __future__ import annotations

from torch import Tensor, nn


class NumericInput(nn.Module):
    """``[B, F]`` standardised values in, the same out (the first layer above weighs them)."""

    def __init__(self, num_fields: int, embedding_dim: int | None = None):
        super().__init__()
        self.output_dim = num_fields

    def reset_parameters(self) -> None:
        pass

    def forward(self, values: Tensor) -> Tensor:
        return values
