"""How several models' predictions of one task become one: the fusion rules of ``mtlrec-fuse``.

Every rule takes the members' scores stacked on a first axis, in the space a user scores in
(probabilities ``[M, N]`` for a binary task, ``[M, N, C]`` for C classes, values for regression),
and returns the fused scores in the same space, so one set of metrics judges members and fusions.

* ``mean``: the average of the members' scores (Breiman's bagging average; for probabilities, the
  classic soft-voting ensemble).
* ``weighted``: weights proportional to each member's validation metric of the task (its
  selection metric: AUC, accuracy; 1/MSE where lower is better), normalised to sum to 1, so the
  weights never look at test.
* ``rank``: the average of each member's scores turned into ranks (``rank / N``, per class
  column), which ignores differences of calibration between members (a classifier's AUC depends
  on ranks only); for classes, rows are then renormalised to sum to 1. Not for regression.
* ``vote``: majority voting on the predicted classes (binary: ``p > 0.5``), the fused score being
  each class's share of votes; ties go to the class with the higher mean probability. Not for
  regression.
* ``stacking`` (Wolpert 1992): a small meta-model per task, a logistic regression on the members'
  logits (binary), a multinomial one on their log-probabilities (classes), a linear regression on
  their values (regression), with an L2 penalty, **fit on the validation split only** and applied
  to test; :func:`fit_stacker` is never given test labels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

EPS = 1e-7
RULES = ("mean", "weighted", "rank", "vote", "stacking")
CLASSIFICATION = ("binary", "multiclass")


def mean(scores: Tensor) -> Tensor:
    return scores.mean(0)


def weighted(scores: Tensor, weights: Tensor) -> Tensor:
    w = weights.to(scores.dtype) / weights.sum()
    return torch.einsum("m,m...->...", w, scores)


def rank(scores: Tensor, kind: str) -> Tensor:
    if kind not in CLASSIFICATION:
        raise ValueError(f"rank averaging needs scores to rank (a binary or multiclass task), not {kind}")
    n = scores.shape[1]
    ranks = scores.argsort(dim=1).argsort(dim=1).to(scores.dtype).add(1) / n  # per member (and class column)
    fused = ranks.mean(0)
    return fused / fused.sum(-1, keepdim=True) if kind == "multiclass" else fused


def vote(scores: Tensor, kind: str) -> Tensor:
    if kind == "binary":
        share = (scores > 0.5).to(scores.dtype).mean(0)
        tie = share == 0.5
        return torch.where(tie, scores.mean(0), share)
    if kind == "multiclass":
        votes = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype).mean(0)
        # ties between classes: the class with the higher mean probability wins (a tiny nudge)
        return votes + 1e-6 * scores.mean(0)
    raise ValueError(f"majority voting needs classes (a binary or multiclass task), not {kind}")


def _features(scores: Tensor, kind: str) -> Tensor:
    """The meta-model's inputs: ``[N, M]`` logits (binary), ``[N, M·C]`` log-probabilities
    (classes) or ``[N, M·D]`` values (regression)."""
    if kind == "binary":
        p = scores.clamp(EPS, 1 - EPS)
        return (p.log() - (1 - p).log()).T
    if kind == "multiclass":
        return scores.clamp_min(EPS).log().permute(1, 0, 2).reshape(scores.shape[1], -1)
    return scores.reshape(scores.shape[0], scores.shape[1], -1).permute(1, 0, 2).reshape(scores.shape[1], -1)


def fit_stacker(val_scores: Tensor, val_labels: Tensor, kind: str, l2: float = 1e-3,
                steps: int = 200) -> Callable[[Tensor], Tensor]:
    """Fit the meta-model on validation scores and labels; returns ``scores -> fused scores``."""
    x = _features(val_scores, kind).double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    outputs = {"binary": 1, "multiclass": val_scores.shape[-1]}.get(kind)
    if outputs is None:  # regression: ridge regression, closed form
        y = val_labels.double().reshape(len(x), -1)
        design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        penalty = l2 * len(x) * torch.eye(design.shape[1], dtype=x.dtype)
        penalty[-1, -1] = 0  # no penalty on the intercept
        coef = torch.linalg.solve(design.T @ design + penalty, design.T @ y)
        shape = val_scores.shape[2:]

        def regress(scores: Tensor) -> Tensor:
            z = (_features(scores, kind).double() - mu) / sd
            out = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1) @ coef
            return out.reshape(len(z), *shape).to(scores.dtype)
        return regress
    linear = torch.nn.Linear(x.shape[1], outputs).double()
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = linear(x)
        if kind == "binary":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), val_labels.double())
        else:
            loss = torch.nn.functional.cross_entropy(logits, val_labels.long())
        loss = loss + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)

    @torch.no_grad()
    def classify(scores: Tensor) -> Tensor:
        logits = linear((_features(scores, kind).double() - mu) / sd)
        out = torch.sigmoid(logits.squeeze(-1)) if kind == "binary" else torch.softmax(logits, -1)
        return out.to(scores.dtype)
    return classify


def to_logits(scores: Tensor, kind: str) -> Tensor:
    """Fused scores back to the logits the task's objective computes its metrics from."""
    if kind == "binary":
        p = scores.clamp(EPS, 1 - EPS)
        return p.log() - (1 - p).log()
    if kind == "multiclass":
        return scores.clamp_min(EPS).log()
    return scores
