"""Task-gradient conflict: do the tasks pull the shared parameters the same way?

Every ``every`` optimizer steps, the gradient of each task's (unweighted) loss on the shared
parameters, ``g_i = ∂L_i/∂θ_sh``, is taken once more, and stored are

* the cosine ``cos(g_i, g_j) = g_i·g_j / (‖g_i‖ ‖g_j‖)`` of each pair (negative: the tasks
  conflict, the quantity PCGrad projects away, Yu et al. 2020, eq. 1), and
* the norms ``‖g_i‖``, so the magnitude ratio ``‖g_i‖/‖g_j‖`` of any pair can be read off
  (a large ratio lets one task dominate the shared update, what GradNorm balances).

The shared parameters are those above the input encoder (experts, a shared bottom, cross-stitch
columns): an embedding table's gradient only touches the rows of the batch's categories, so its
cosine mostly measures which categories two tasks' rows share. Where nothing is shared above the
encoder, the encoder's parameters are used; tasks that share nothing (single-task networks) have
no conflict to measure.

Cost: one extra backward per task every ``every`` steps (the graph is kept for the weighting's
own backward). The samples stay on the device; :meth:`GradientConflict.flush` reads them to the
host once per epoch, so the training step never waits on a host sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def task_gradients(losses: Mapping[str, Tensor], params: Sequence[nn.Parameter]) -> Tensor:
    """``[T, P]``: each task's loss gradient on ``params``, flattened (zeros where a loss does not
    reach a parameter). The graph is retained."""
    rows = []
    for loss in losses.values():
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    return torch.stack(rows)


def conflict(gradients: Tensor) -> tuple[Tensor, Tensor]:
    """``[T, P]`` gradients -> (``[T, T]`` cosine similarities, ``[T]`` norms)."""
    g = gradients.float()
    norms = g.norm(dim=1)
    cosine = (g @ g.T) / (norms[:, None] * norms[None, :]).clamp_min(1e-30)
    return cosine, norms


class GradientConflict:
    """Samples the conflict of ``tasks`` on ``params`` every ``every`` optimizer steps."""

    def __init__(self, tasks: Sequence[str], params: Sequence[nn.Parameter], every: int):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"insight.conflict_every={every!r}: give a number of optimizer steps (0: off)")
        self.tasks, self.params, self.every = list(tasks), list(params), every
        self._pending: list[tuple[int, Tensor, Tensor]] = []
        self.history: list[dict] = []  # {"step", "cosine": [[T×T]], "norm": [T]}

    def due(self, step: int) -> bool:
        return self.every > 0 and bool(self.params) and len(self.tasks) > 1 and step % self.every == 0

    def measure(self, step: int, losses: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        cosine, norms = conflict(task_gradients({t: losses[t] for t in self.tasks}, self.params))
        self._pending.append((step, cosine.detach(), norms.detach()))
        return cosine, norms

    def flush(self) -> None:
        """Move the samples of the epoch to :attr:`history` (one host transfer)."""
        for step, cosine, norms in self._pending:
            self.history.append({"step": step, "cosine": [[round(float(v), 6) for v in row] for row in cosine.cpu()],
                                 "norm": [round(float(v), 8) for v in norms.cpu()]})
        self._pending = []

    def summary(self) -> dict | None:
        """What results.json stores: the tasks, the samples, and each pair's mean cosine."""
        if not self.history:
            return None
        pairs = {}
        for i, a in enumerate(self.tasks):
            for j in range(i + 1, len(self.tasks)):
                values = [h["cosine"][i][j] for h in self.history]
                pairs[f"{a}~{self.tasks[j]}"] = {"mean_cosine": round(sum(values) / len(values), 6),
                                                 "share_negative": round(sum(v < 0 for v in values) / len(values), 6)}
        return {"every": self.every, "tasks": self.tasks, "pairs": pairs, "samples": self.history}


def conflict_parameters(shared: Sequence[nn.Parameter], encoder: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The shared parameters above the encoder, or the encoder's when nothing else is shared."""
    below = {id(p) for p in encoder}
    above = [p for p in shared if id(p) not in below]
    return above or list(shared)
