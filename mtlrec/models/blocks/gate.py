"""Softmax gates that mix experts, returning their weights for logging."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
        scores = self.linear(x)
        return gate_softmax(scores if self.temperature == 1.0 else scores / self.temperature)


def gate_bank(gates: Sequence[Gate], x: Tensor) -> Tensor:
    """The weights of G gates of one shape at once: ``[B, G, E]``, gate g's at ``[:, g]``.

    Their weights are stacked at each call (a copy of a few kB) and scored in one matmul, instead
    of one small matmul and softmax per gate: on a small model, each op's fixed cost is what the
    step spends. ``x``: ``[B, in]``, read by every gate (MMoE), or ``[B, G, in]``, gate g reading
    ``x[:, g]`` (PLE's task gates above the first level). The same values as calling each gate.
    """
    weight = torch.stack([g.linear.weight for g in gates])  # [G, E, in]
    bias = torch.stack([g.linear.bias for g in gates])  # [G, E]
    if x.dim() == 2:
        scores = F.linear(x, weight.flatten(0, 1), bias.flatten()).unflatten(1, bias.shape)
    else:
        scores = torch.einsum("bgi,gei->bge", x, weight) + bias
    temperatures = [g.temperature for g in gates]
    if any(t != 1.0 for t in temperatures):
        scores = scores / scores.new_tensor(temperatures).unsqueeze(-1)
    return gate_softmax(scores)


def gate_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dimension (the experts), the same values as ``torch.softmax(scores, -1)``.

    On CPU it is composed of a few elementwise ops with its own backward, because torch.softmax's
    CPU kernel was slow over a last dimension of a handful of experts (measured; not read why):
    on ``[4096, 2, 8]`` (float32, 1 thread) forward and backward took 1.70 ms against this 0.38 ms,
    and an evaluation batch's ``[16384, 2, 8]`` forward 4.7 ms against 0.9 ms. Elsewhere (CUDA's
    kernel has no such cost) it is torch.softmax.
    """
    if scores.device.type != "cpu":
        return torch.softmax(scores, dim=-1)
    return _CpuSoftmax.apply(scores)


class _CpuSoftmax(torch.autograd.Function):
    """``y = exp(x - max x) / Σ exp(x - max x)``; backward ``y ⊙ (g - Σ g ⊙ y)`` (the softmax Jacobian
    applied to g), from the saved output. ``generate_vmap_rule``: seed-stacked training vmaps it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(scores: Tensor) -> Tensor:
        exp = (scores - scores.amax(-1, keepdim=True)).exp()
        return exp / exp.sum(-1, keepdim=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (weights,) = ctx.saved_tensors
        return weights * (grad - (grad * weights).sum(-1, keepdim=True))


def mix(experts: Tensor, weights: Tensor) -> Tensor:
    """Σ_e weights[..., e]·experts[..., e, :] → ``[..., D]`` (MMoE eq. 5's weighted sum of experts).

    ``weights`` ``[B, E]`` with ``experts`` ``[B, E, D]``; or, for several gates at once,
    ``[B, G, E]`` with ``[B, 1, E, D]`` (every gate over the same experts) or ``[B, G, E, D]``.
    A broadcast product summed over the experts, not an einsum: einsum makes this a batch of B
    (or B·G) matrix products of 1×E by E×D, whose per-product overhead made forward and backward
    2–3× slower on CPU (B = 1024–4096, E = 8, D = 16: 1.39 → 0.65 ms and 3.0 → 0.9 ms measured)."""
    return (weights.unsqueeze(-1) * experts).sum(-2)
