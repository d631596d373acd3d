"""AITM (Xi et al., KDD 2021): adaptive information transfer along a chain of conversion steps.

For a chain of tasks t = 1..T (impression → click → purchase, each on *every* impression), task
t's tower gives q_t; the previous step passes p_{t−1} = g_{t−1}(z_{t−1}) (eq. 2), and the
adaptive information transfer (AIT) module attends over the two (eq. 3–5)::

    w_u = softmax_u(⟨h₂(u), h₃(u)⟩ / √k),   z_t = Σ_{u ∈ {p_{t−1}, q_t}} w_u · h₁(u)

(z_1 = q_1), and ŷ_t = σ(head_t(z_t)). The behavioural-expectation calibrator (eq. 7) asks that
a later step never be likelier than an earlier one::

    L_cal = α · mean_batch( max(ŷ_t − ŷ_{t−1}, 0) ),   α = 0.6 (the authors' code)

It is a **mean** over the batch (the paper's eq. 7 averages; one public port sums, which scales
the term with the batch size) and is attached to task t's loss, so whatever weighting is chosen
weighs it with that task; under fixed weights the total is the authors' L_CE + α·L_cal.
Attention follows the paper (query and key from h₂, h₃; value h₁); the public PyTorch port
scores query·value instead.

A conditional task outside the chain (``conditionals: {cvr: ctcvr}``: pCVR on clicked
impressions) is derived as p_t / p_{t−1}, capped at 1, evaluated and served but never trained,
as ESMM's pCVR is. Any other task gets a plain tower trained on its own sample space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrec.data.schema import Schema, SchemaError
from mtlrec.data.table import Batch
from mtlrec.models.architectures.esmm import check_binary_tasks
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.mlp import MLP
from mtlrec.models.blocks.probability import ratio_logit
from mtlrec.models.inputs.encoder import InputEncoder


class InformationTransfer(nn.Module):
    """The AIT module (eq. 3–5): attention over the transferred vector and the current tower."""

    def __init__(self, dim: int):
        super().__init__()
        self.value, self.query, self.key = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: Tensor, current: Tensor) -> Tensor:
        u = torch.stack([transferred, current], dim=1)  # [B, 2, k]
        weights = torch.softmax((self.query(u) * self.key(u)).sum(-1) * self.scale, dim=1)  # [B, 2]
        return (weights.unsqueeze(-1) * self.value(u)).sum(dim=1)


def calibration(probabilities: Sequence[Tensor], weight: float) -> Tensor:
    """α · mean over the batch of Σ_t max(ŷ_t − ŷ_{t−1}, 0) (eq. 7)."""
    gaps = [F.relu(later - earlier) for earlier, later in zip(probabilities, probabilities[1:])]
    return weight * torch.stack(gaps).sum(0).mean()


class AITM(Architecture):
    """Shared encoder → a tower per chain step, linked by information transfer; see the module."""

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        chain: Sequence[str] = ("click", "ctcvr"),
        conditionals: Mapping[str, str] | None = None,
        tower_units: Sequence[int] = (128, 64, 32),
        calibration_weight: float = 0.6,
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        chain, conditionals = list(chain), dict(conditionals or {})
        if len(chain) < 2 or len(set(chain)) != len(chain):
            raise SchemaError(f"arch.chain={chain}: AITM needs a chain of >= 2 different tasks, e.g. [click, ctcvr]")
        if not tower_units:
            raise SchemaError("arch.tower_units: AITM's towers need at least one layer")
        if calibration_weight < 0:
            raise SchemaError(f"arch.calibration_weight={calibration_weight} must be >= 0 (0 turns it off)")
        check_binary_tasks(schema, "AITM", **{f"chain[{i}]": t for i, t in enumerate(chain)})
        for task in chain:
            if schema.task(task).mask:
                raise SchemaError(f"arch.chain: AITM trains {task!r} on every impression, but it is masked to "
                                  f"{schema.task(task).mask!r}; remove the mask or leave it out of the chain")
        for task, step in conditionals.items():
            check_binary_tasks(schema, "AITM", **{f"conditionals.{task}": task})
            if step not in chain[1:]:
                raise SchemaError(f"arch.conditionals.{task}={step!r} must name a chain step after the first "
                                  f"({chain[1:]}): the task is derived as p({step}) / p(the step before it)")
        self.chain, self.conditionals = chain, conditionals
        self.calibration_weight = float(calibration_weight)
        self.encoder = encoder
        dim = tower_units[-1]
        self.towers = nn.ModuleDict({t: MLP(self.input_dim, tower_units, dropout) for t in chain})
        self.transfer = nn.ModuleDict(  # g_{t−1}: what one step passes to the next
            {t: nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout)) for t in chain[:-1]}
        )
        self.attention = nn.ModuleDict({t: InformationTransfer(dim) for t in chain[1:]})
        self.heads = nn.ModuleDict({t: nn.Linear(dim, 1) for t in chain})
        others = [t for t in self.task_names if t not in chain and t not in conditionals]
        self.plain = nn.ModuleDict(
            {t: tower for t, tower in self.make_towers(self.input_dim, tower_units, dropout).items() if t in others}
        )

    def forward(self, batch: Batch) -> TaskOutputs:
        x = self.encoder(batch)
        logits: dict[str, Tensor] = {}
        z = self.towers[self.chain[0]](x)
        logits[self.chain[0]] = self.heads[self.chain[0]](z).squeeze(-1)
        for earlier, task in zip(self.chain, self.chain[1:]):
            z = self.attention[task](self.transfer[earlier](z), self.towers[task](x))
            logits[task] = self.heads[task](z).squeeze(-1)
        for task, step in self.conditionals.items():
            before = self.chain[self.chain.index(step) - 1]
            logits[task] = ratio_logit(logits[step], logits[before])
        logits.update({t: tower(x) for t, tower in self.plain.items()})
        auxiliary = {}
        if self.calibration_weight > 0:
            probabilities = [torch.sigmoid(logits[t]) for t in self.chain]
            for i, task in enumerate(self.chain[1:], start=1):
                term = calibration(probabilities[i - 1 : i + 1], self.calibration_weight)
                auxiliary[task] = {"calibration": term}
        return self.outputs({t: logits[t] for t in self.task_names}, features=x, auxiliary=auxiliary)

    def trained_tasks(self) -> list[str]:
        return [t for t in self.task_names if t not in self.conditionals]

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers, self.transfer, self.attention, self.heads, self.plain]

    def part_modules(self) -> dict[str, list[nn.Module]]:
        # every step's tower, its transfer to the next step, the attention and the heads serve one task each
        return {"gates": [], "towers": [self.towers, self.transfer, self.attention, self.heads, self.plain]}

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The shared embedding: every tower reads it (GradNorm's W)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]
