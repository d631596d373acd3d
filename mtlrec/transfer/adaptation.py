"""Domain adaptation on the shared representation: DANN and CORAL, for any architecture and any
loss weighting.

Both act on the deepest representation every task reads, ``TaskOutputs.shared`` (a shared
bottom's output, MMoE's experts side by side, OMoE's mixture; the input encoder's output,
``TaskOutputs.features``, for the other architectures), of a training batch that holds source and
target rows (``data.domain.rows=both``; ``Batch.domain`` is 1 for a target row). Target rows
without labels are in the batch only for this loss: their tasks are masked out (:mod:`mtlrec.data.tabular.domains`).

* **DANN** (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016): a domain
  classifier ``d(f)`` learns to tell source from target rows (binary cross-entropy ``L_d``); a
  gradient-reversal layer between the representation and the classifier passes ``-λ ∂L_d/∂f``
  down, so the layers below learn features the classifier cannot separate (eq. 13-15 of the
  paper). ``λ`` follows the paper's schedule ``λ_p = 2 / (1 + exp(-10 p)) - 1`` over the training
  progress ``p`` (0 → 1), times ``weight``; ``schedule: constant`` keeps ``weight``. One deviation
  from eq. 15: the classifier's own update is the plain gradient of ``L_d`` (not scaled by ``λ``),
  as in common implementations; only the reversed gradient below carries ``λ``.
* **CORAL** (Sun & Saenko, "Deep CORAL", ECCV-W 2016): ``weight · ‖C_s − C_t‖²_F / (4 d²)``, the
  distance between the source and target covariances of the ``d``-dimensional representation,
  computed with the domain as row weights (no boolean indexing, so no host sync); zero when a
  batch has fewer than two rows of a domain.

The training module adds the adaptation loss's gradient to whatever the weighting set (it never
enters the weighting: it is not a task), and trains the classifier with the model's optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrec.models.blocks.mlp import MLP

SCHEDULES = ("ganin", "constant")


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    return GradientReversal.apply(x, scale)


class DomainAdaptation(nn.Module):
    """``forward(features [B, D], domain [B], progress in [0, 1]) -> scalar loss``."""

    def __init__(self, feature_dim: int, weight: float = 1.0):
        super().__init__()
        if not weight > 0:
            raise ValueError(f"adapt.weight must be > 0, got {weight}")
        self.feature_dim, self.weight = feature_dim, float(weight)


class DANN(DomainAdaptation):
    """A domain classifier (``hidden`` units, ReLU) behind a gradient-reversal layer."""

    def __init__(self, feature_dim: int, hidden: Sequence[int] = (64,), weight: float = 1.0,
                 schedule: str = "ganin", dropout: float = 0.0):
        super().__init__(feature_dim, weight)
        if schedule not in SCHEDULES:
            raise ValueError(f"adapt.schedule={schedule!r}: use one of {', '.join(SCHEDULES)}")
        self.schedule = schedule
        self.body = MLP(feature_dim, list(hidden), dropout)
        self.head = nn.Linear(self.body.output_dim, 1)

    def reversal_scale(self, progress: float) -> float:
        if self.schedule == "constant":
            return self.weight
        return self.weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)

    def forward(self, features: Tensor, domain: Tensor, progress: float = 1.0) -> Tensor:
        reversed_features = reverse_gradient(features, self.reversal_scale(progress))
        logits = self.head(self.body(reversed_features)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, domain.to(logits.dtype))


class CORAL(DomainAdaptation):
    def forward(self, features: Tensor, domain: Tensor, progress: float = 1.0) -> Tensor:
        target = domain.to(features.dtype).unsqueeze(1)
        source = 1.0 - target
        distance = (_covariance(features, source) - _covariance(features, target)).pow(2).sum()
        enough = (source.sum() >= 2) & (target.sum() >= 2)
        d = features.shape[1]
        return torch.where(enough, self.weight * distance / (4.0 * d * d), distance.new_zeros(()))


def _covariance(x: Tensor, weights: Tensor) -> Tensor:
    """The unbiased covariance of the rows of ``x`` whose weight is 1 (weights ``[B, 1]`` of 0/1)."""
    n = weights.sum()
    mean = (x * weights).sum(0, keepdim=True) / n.clamp(min=1)
    centred = (x - mean) * weights
    return centred.T @ centred / (n - 1).clamp(min=1)
