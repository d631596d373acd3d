"""The non-finite guard: the first bad step and task are recorded on the device and raised at the
next check, for the losses and for the task weights alike (no host sync on the other steps)."""

from __future__ import annotations

import math

import pytest
import torch

from mtlrec.training.guard import NonFiniteError, NonFiniteGuard


def _losses(a: float, b: float) -> dict[str, torch.Tensor]:
    return {"ctr": torch.tensor(a), "cvr": torch.tensor(b)}


def test_the_first_non_finite_loss_is_reported_at_the_next_check() -> None:
    guard = NonFiniteGuard(["ctr", "cvr"], check_every=10)
    weights = torch.ones(2)
    guard.observe(_losses(0.5, 0.7), weights, step=1)
    guard.observe(_losses(0.5, math.inf), weights, step=3)  # not a check step: recorded, not raised
    guard.observe(_losses(math.nan, math.nan), weights, step=4)
    with pytest.raises(NonFiniteError) as raised:
        guard.observe(_losses(0.1, 0.1), weights, step=10)
    assert raised.value.details == {"quantity": "training loss", "task": "cvr", "step": 3, "value": "inf"}


def test_a_finite_run_never_raises_and_a_bad_weight_raises_at_the_next_check() -> None:
    guard = NonFiniteGuard(["ctr", "cvr"], check_every=4)
    for step in range(1, 4):
        guard.observe(_losses(0.3, 0.2), torch.tensor([0.5, 1.5]), step)
    guard.check()
    guard.observe(_losses(0.3, 0.2), torch.tensor([1.0, math.nan]), step=5)  # recorded, not raised
    with pytest.raises(NonFiniteError, match="the weight of task 'cvr' became nan at training step 5"):
        guard.observe(_losses(0.3, 0.2), torch.tensor([0.5, 1.5]), step=8)
