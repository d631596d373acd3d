"""Stop a run whose training loss or a task weight stops being a finite number.

A NaN loss makes every parameter NaN one step later, and a run that goes on records a "complete"
result whose metrics are those of a broken model (Lightning's early stopping only stops, silently,
on a NaN *validation* metric). The guard makes it a failed run that says where it went wrong.

It costs no host synchronisation per step: each step folds "is each task's loss finite" into a
small tensor on the loss's device (the first step each task went wrong, and the value), and the
tensor is read every ``check_every`` steps and at the end of each epoch. The task weights are
folded in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss or a weight that is NaN or infinite; ``details`` goes into results.json."""

    def __init__(self, quantity: str, task: str, step: int, value: float):
        self.details = {"quantity": quantity, "task": task, "step": step, "value": str(value)}
        super().__init__(
            f"the {quantity} of task {task!r} became {value} at training step {step}; the run stopped. Lower "
            f"optimizer.lr, look for extreme label values (a regression label may need log1p: true), or try "
            f"another weighting"
        )


class NonFiniteGuard:
    """See the module. ``observe`` once per training step; ``check`` to raise what was seen."""

    def __init__(self, tasks: Sequence[str], check_every: int = 50):
        self.tasks = list(tasks)
        self.check_every = max(int(check_every), 1)
        self._first: Tensor | None = None  # per task: the first step its loss was not finite, -1 while it is
        self._value: Tensor | None = None

    def observe(self, losses: Mapping[str, Tensor], weights: Tensor, step: int) -> None:
        """``weights``: the step's task weights, ``[T]`` in ``tasks`` order."""
        values = torch.cat([torch.stack([losses[t].detach().float() for t in self.tasks]),
                            weights.detach().float().to(losses[self.tasks[0]].device)])
        if self._first is None:
            self._first = torch.full_like(values, -1, dtype=torch.long)
            self._value = torch.zeros_like(values)
        new = ~torch.isfinite(values) & (self._first < 0)
        self._first = torch.where(new, torch.full_like(self._first, step), self._first)
        self._value = torch.where(new, values, self._value)
        if step % self.check_every == 0:
            self.check()

    def check(self) -> None:
        if self._first is None:
            return
        first = self._first.tolist()
        seen = [(s, i) for i, s in enumerate(first) if s >= 0]
        if seen:
            step, i = min(seen)
            n = len(self.tasks)  # the losses come first, then the weights
            quantity = "training loss" if i < n else "weight"
            raise NonFiniteError(quantity, self.tasks[i % n], step, float(self._value[i]))
