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
    """``[T, P]`` gradients -> (``[T, T]`` cosine similarities, ``[T]`` norms). A task whose
    gradient is zero (e.g. a batch without a row of its sample space) has no direction: its
    cosines are NaN, and the summaries skip them."""
    g = gradients.float()
    norms = g.norm(dim=1)
    product = norms[:, None] * norms[None, :]
    cosine = torch.where(product > 0, (g @ g.T) / product.clamp_min(1e-30), torch.full_like(product, float("nan")))
    return cosine, norms


def _digits(value: float) -> float:
    """Six significant digits (gradient norms can be 1e-7 and smaller)."""
    return float(f"{value:.6g}")


class GradientConflict:
    """Samples the conflict of ``tasks`` on ``params`` every ``every`` optimizer steps."""

    def __init__(self, tasks: Sequence[str], params: Sequence[nn.Parameter], every: int,
                 where: str = "above_encoder"):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"insight.conflict_every={every!r}: give a number of optimizer steps (0: off)")
        self.tasks, self.params, self.every, self.where = list(tasks), list(params), every, where
        self._pending: list[tuple[int, Tensor, Tensor]] = []
        self.history: list[dict] = []  # {"step", "cosine": [[T×T]], "norm": [T]}

    def due(self, step: int) -> bool:
        return self.every > 0 and bool(self.params) and len(self.tasks) > 1 and step % self.every == 0

    def measure(self, step: int, losses: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        cosine, norms = conflict(task_gradients({t: losses[t] for t in self.tasks}, self.params))
        self._pending.append((step, cosine.detach(), norms.detach()))
        return cosine, norms

    def epoch_means(self) -> dict[str, Tensor]:
        """Each pair's mean cosine over the samples not yet flushed (on the device), for the logger."""
        if not self._pending:
            return {}
        stacked = torch.stack([cosine for _, cosine, _ in self._pending])
        return {f"{a}~{self.tasks[j]}": stacked[:, i, j].nanmean() for i, a in enumerate(self.tasks)
                for j in range(i + 1, len(self.tasks))}

    def _converted(self) -> list[dict]:
        def cell(v: Tensor) -> float | None:
            return None if v.isnan() else round(float(v), 6)

        return [{"step": step, "cosine": [[cell(v) for v in row] for row in cosine.cpu()],
                 "norm": [_digits(float(v)) for v in norms.cpu()]} for step, cosine, norms in self._pending]

    def flush(self) -> None:
        """Move the samples of the epoch to :attr:`history` (one host transfer)."""
        self.history += self._converted()
        self._pending = []

    def snapshot(self) -> list[dict]:
        """Every sample so far, the epoch's unflushed ones included (what a checkpoint keeps)."""
        return self.history + self._converted()

    def summary(self) -> dict | None:
        """What results.json stores: the tasks, the samples, and each pair's mean cosine."""
        if not self.history:
            return None
        pairs = {}
        for i, a in enumerate(self.tasks):
            for j in range(i + 1, len(self.tasks)):
                values = [h["cosine"][i][j] for h in self.history if h["cosine"][i][j] is not None]
                pairs[f"{a}~{self.tasks[j]}"] = {
                    "mean_cosine": round(sum(values) / len(values), 6) if values else None,
                    "share_negative": round(sum(v < 0 for v in values) / len(values), 6) if values else None,
                    "samples": len(values)}
        return {"every": self.every, "tasks": self.tasks, "parameters": self.where,
                "num_parameters": sum(p.numel() for p in self.params), "pairs": pairs, "samples": self.history}


def conflict_parameters(shared: Sequence[nn.Parameter], encoder: Sequence[nn.Parameter]
                        ) -> tuple[list[nn.Parameter], str]:
    """(The shared parameters above the encoder, ``"above_encoder"``), or, when nothing else is
    shared (ESMM, AITM: the tasks share only their inputs), (the encoder's, ``"encoder"``): then
    each sample is a dense gradient of the embedding tables, and the cosine mostly says which
    categories the tasks' rows share; the summary and the table name which it is."""
    below = {id(p) for p in encoder}
    above = [p for p in shared if id(p) not in below]
    return (above, "above_encoder") if above else (list(shared), "encoder")
