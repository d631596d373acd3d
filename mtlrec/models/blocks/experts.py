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

    # Set to True by a weighting that needs each task's gradient on the last depth's weights
    # (GradNorm): the forward pass then keeps that depth's input and pre-activation (one batch),
    # from which :meth:`last_layer_gradients` forms the T weight gradients in one einsum.
    capture_last_layer: bool = False
    _captured: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        depth = len(self.weights)
        z = self._first_layer(x) + self.biases[0]
        if depth == 1:
            self._capture(x, z)
        h = self.dropout(torch.relu(z))
        for level, (w, b) in enumerate(zip(list(self.weights)[1:], list(self.biases)[1:]), start=2):
            z = torch.einsum("bei,eio->beo", h, w) + b
            if level == depth:
                self._capture(h, z)
            h = self.dropout(torch.relu(z))
        return h

    def _capture(self, inputs: Tensor, pre_activation: Tensor) -> None:
        if self.capture_last_layer and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            self._captured = (inputs, pre_activation)

    def last_layer_output(self) -> Tensor | None:
        """The last depth's pre-activation ``[B, E, out]`` from the latest training forward."""
        return self._captured[1] if self._captured is not None else None

    def last_layer_gradients(self, grad_output: Tensor) -> list[Tensor]:
        """``[∇_W L_t, ∇_b L_t]`` stacked over t, ``[T, E, in, out]`` and ``[T, E, out]``, from the
        tasks' gradients on the last depth's pre-activation (``[T, B, E, out]``) and its input, kept
        by the latest forward: ∇_W L_t = Σ_b x_bᵀ g_tb per expert, one einsum for all tasks
        (vmap's batched backward expands the input T times instead, measured 3× slower)."""
        inputs, self._captured = self._captured[0], None  # used once: the batch's graph is not kept past the step
        if inputs.dim() == 2:  # one input for all experts
            weight = torch.einsum("bi,tbeo->teio", inputs, grad_output)
        elif inputs.shape[1] == self.num_experts:  # one input per expert
            weight = torch.einsum("bei,tbeo->teio", inputs, grad_output)
        else:  # one input per group of experts
            groups = inputs.shape[1]
            grouped = grad_output.unflatten(2, (groups, self.num_experts // groups))
            weight = torch.einsum("bgi,tbgeo->tgeio", inputs, grouped).flatten(1, 2)
        return [weight, grad_output.sum(1)]

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
