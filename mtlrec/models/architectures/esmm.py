"""ESMM (Ma et al., SIGIR 2018): the entire-space multi-task model for post-click conversion.

pCVR is only observed on clicked impressions, so training it there alone suffers from sample
selection bias and sparse labels. ESMM trains on *all* impressions instead (eq. 2–4)::

    pCTCVR = pCTR × pCVR                          (a product of probabilities, eq. 3)
    L = Σ BCE(click, pCTR) + Σ BCE(click·conversion, pCTCVR)     (over impressions)

pCVR is never trained directly: it is an output (evaluated on clicked impressions and served by
:class:`~mtlrec.predict.RunScorer`) whose only supervision flows through pCTCVR. Both towers read
the shared input encoder (the paper's shared embedding). The dataset declares the three tasks:
the CTR task on impressions, the CVR task masked to clicks, and the CTCVR task whose label is
click·conversion on impressions (``conf/data/aliccp.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlrec.data.schema import Schema, SchemaError
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.blocks.probability import product_logit
from mtlrec.models.inputs.encoder import InputEncoder


def check_binary_tasks(schema: Schema, arch: str, **roles: str) -> None:
    """Each named role (``ctr="click"``) must be a binary task of the dataset."""
    for role, name in roles.items():
        if name not in schema.task_names:
            raise SchemaError(
                f"arch.{role}={name!r}: {arch} needs it, but the dataset's tasks are {schema.task_names}; "
                f"set arch.{role} to one of them (or declare the task in data.tasks)"
            )
        if schema.task(name).kind != "binary":
            raise SchemaError(f"arch.{role}={name!r}: {arch} needs a binary task, but {name!r} is "
                              f"{schema.task(name).kind}")


class ESMM(Architecture):
    """Shared encoder → a CTR tower and a CVR tower; pCTCVR is their product. Any other task of
    the dataset gets a plain tower on the same encoder, trained on its own sample space."""

    def __init__(
        self,
        schema: Schema,
        encoder: InputEncoder,
        ctr: str = "click",
        cvr: str = "cvr",
        ctcvr: str = "ctcvr",
        tower_units: Sequence[int] = (360, 200, 80),
        dropout: float = 0.0,
    ):
        super().__init__(schema, encoder)
        check_binary_tasks(schema, "ESMM", ctr=ctr, cvr=cvr, ctcvr=ctcvr)
        if len({ctr, cvr, ctcvr}) != 3:
            raise SchemaError(f"arch: ESMM needs three different tasks, got ctr={ctr!r} cvr={cvr!r} ctcvr={ctcvr!r}")
        for role, name in (("ctr", ctr), ("ctcvr", ctcvr)):
            if schema.task(name).mask:
                raise SchemaError(f"arch.{role}={name!r}: ESMM trains it on every impression, but the task is "
                                  f"masked to {schema.task(name).mask!r}; remove the task's mask")
        ctr_label = schema.task(ctr).label
        if schema.task(cvr).mask != ctr_label:
            raise SchemaError(
                f"arch.cvr={cvr!r}: pCVR is defined on clicked impressions, so the task needs mask: {ctr_label} "
                f"(the CTR task's label); it has mask {schema.task(cvr).mask!r}"
            )
        self.ctr, self.cvr, self.ctcvr = ctr, cvr, ctcvr
        self.encoder = encoder
        self.towers = nn.ModuleDict(
            {t: tower for t, tower in self.make_towers(self.input_dim, tower_units, dropout).items() if t != ctcvr}
        )

    def forward(self, batch: Batch) -> TaskOutputs:
        x = self.encoder(batch)
        logits = {t: tower(x) for t, tower in self.towers.items()}
        logits[self.ctcvr] = product_logit(logits[self.ctr], logits[self.cvr])
        return self.outputs({t: logits[t] for t in self.task_names}, features=x)

    def trained_tasks(self) -> list[str]:
        return [t for t in self.task_names if t != self.cvr]

    def task_specific_modules(self) -> list[nn.Module]:
        return [self.towers]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The shared embedding: the only layer both towers read (GradNorm's W)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]
