"""The interface every architecture implements, and what its forward pass returns.

An architecture maps a batch to per-task logits (:class:`TaskOutputs`) and says which of its
parameters are task-specific and which layer is the last shared one. Everything else (losses,
metrics, weighting, training) is generic and never asks which architecture it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.models.blocks.mlp import Tower
from mtlrec.models.inputs.encoder import InputEncoder
from mtlrec.weighting.base import SharedModel

PARTS = ("embeddings", "backbone", "bottom", "gates", "towers")


@dataclass
class TaskOutputs:
    """``logits[task]``: ``[B]`` for binary/scalar regression, ``[B, C]`` for C classes / vector
    regression. ``gates[name]``: gate weights ``[B, E]`` (for utilisation diagnostics).
    ``features``: the encoder's output when every task reads it (``None`` for independent
    networks). Everything with millions of parameters (embedding tables, an image backbone) sits
    below it, so a gradient-based weighting can work at this representation instead of on those
    parameters (:class:`~mtlrec.weighting.aggregation.AggregationWeighting`, ``level``).
    ``auxiliary[task][term]``: extra loss terms an architecture adds to a task's loss (AITM's
    calibrator), already scaled by their coefficient; the training module adds each to its task's
    loss, so every weighting weighs it with that task, and logs it on its own. ``shared``: the
    deepest representation every task reads (a shared bottom's output, MMoE's experts), where
    domain adaptation acts (:mod:`mtlrec.transfer.adaptation`); ``None``: ``features``."""

    logits: dict[str, Tensor]
    gates: dict[str, Tensor] = field(default_factory=dict)
    features: Tensor | None = None
    auxiliary: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    shared: Tensor | None = None


class Architecture(nn.Module, ABC):
    """Base class. Subclasses build their layers in ``__init__`` and implement three methods.

    The input encoder is injected: it maps a batch to ``[B, encoder.output_dim]``, whatever the
    feature kinds are, so an architecture is only the part above the inputs. The schema gives the
    tasks and their head widths (the *fitted* schema: a multilabel task's tags are known).
    """

    def __init__(self, schema: Schema, encoder: InputEncoder):
        super().__init__()
        self.task_names = schema.task_names
        self.logit_dims = {t.name: t.logit_dim for t in schema.tasks}
        self.input_dim = encoder.output_dim

    def make_towers(self, in_dim: int, units: Sequence[int], dropout: float = 0.0) -> nn.ModuleDict:
        return nn.ModuleDict({t: Tower(in_dim, units, self.logit_dims[t], dropout) for t in self.task_names})

    def outputs(self, logits: dict[str, Tensor], gates: dict[str, Tensor] | None = None,
                features: Tensor | None = None,
                auxiliary: dict[str, dict[str, Tensor]] | None = None, shared: Tensor | None = None) -> TaskOutputs:
        """Squeeze single-logit heads to ``[B]`` so losses see the label's shape."""
        squeezed = {t: v.squeeze(-1) if self.logit_dims[t] == 1 and v.dim() > 1 else v for t, v in logits.items()}
        return TaskOutputs(squeezed, gates or {}, features, auxiliary or {}, shared)

    def shared_width(self) -> int:
        """The width of ``TaskOutputs.shared`` (of ``features`` where an architecture gives no
        deeper shared representation): what a domain classifier reads."""
        return self.input_dim

    def trained_tasks(self) -> list[str]:
        """Tasks with a loss term (all of them unless an architecture only *derives* an output,
        like ESMM's pCVR, which is evaluated and served but never trained directly). The
        weighting sees exactly these."""
        return list(self.task_names)

    @abstractmethod
    def forward(self, batch: Batch) -> TaskOutputs: ...

    @abstractmethod
    def task_specific_modules(self) -> list[nn.Module]:
        """Modules whose parameters serve one task each (towers, per-task gates, task experts)."""

    @abstractmethod
    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last layer every task's output depends on (GradNorm's W); [] if none."""

    def part_modules(self) -> dict[str, list[nn.Module]]:
        """Which of this architecture's modules are its ``gates`` and its ``towers`` (and, when it
        has more input encoders than ``self.encoder``, its ``embeddings``); the rest of it is its
        ``bottom``: experts, a shared bottom, cross-stitch columns. The default: the towers made by
        :meth:`make_towers` (``self.towers``), no gates; an architecture with gates or other
        per-task heads says so."""
        towers = getattr(self, "towers", None)
        return {"gates": [], "towers": [towers] if isinstance(towers, nn.Module) else []}

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter in exactly one of :data:`PARTS`, for freezing and per-part learning
        rates (``finetune.freeze``, ``finetune.lr``): ``embeddings`` (the input encoder without its
        image backbone), ``backbone``, ``bottom``, ``gates``, ``towers``."""
        seen: set[int] = set()

        def take(params) -> list[nn.Parameter]:
            out = [p for p in params if id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        declared = self.part_modules()
        encoders = [m for m in [getattr(self, "encoder", None), *declared.get("embeddings", [])] if m is not None]
        backbone = take(p for m in encoders if hasattr(m, "backbone_parameters") for p in m.backbone_parameters())
        embeddings = take(p for m in encoders for p in m.parameters())
        gates = take(p for m in declared.get("gates", []) for p in m.parameters())
        towers = take(p for m in declared.get("towers", []) for p in m.parameters())
        bottom = take(self.parameters())  # what is left: experts, a shared bottom, per-task bodies
        return {"embeddings": embeddings, "backbone": backbone, "bottom": bottom, "gates": gates, "towers": towers}

    def gate_expert_labels(self) -> dict[str, list[str]]:
        """Gate name -> the names of the experts its weights are over, in order, so utilisation
        heatmaps line up gates over different expert sets (PLE's task gates see their own task's
        experts and the shared ones). ``{}``: every gate is over the same experts, numbered."""
        return {}

    def task_networks(self) -> dict[str, nn.Module] | None:
        """task -> the module holding *all* of that task's parameters, when the tasks share none
        (independent networks, selected per task); ``None`` for architectures that share."""
        return None

    def shared_model(self) -> SharedModel:
        """Partition parameters into shared / task-specific for the weighting."""
        task_ids = {id(p) for m in self.task_specific_modules() for p in m.parameters()}
        params = [p for p in self.parameters() if p.requires_grad]  # frozen parts (finetune.freeze) are no one's
        shared = [p for p in params if id(p) not in task_ids]
        encoder = getattr(self, "encoder", None)
        below = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
        return SharedModel(
            shared_parameters=shared,
            last_shared_parameters=[p for p in self.last_shared_parameters() if p.requires_grad],
            task_parameters=[p for p in params if id(p) in task_ids],
            encoder_parameters=[p for p in shared if id(p) in below],
            last_shared_layer=self.last_shared_layer(),
        )

    def last_shared_layer(self) -> nn.Module | None:
        """The module holding :meth:`last_shared_parameters`, when it can form each task's
        gradient on them from the tasks' output gradients (see :class:`SharedModel`); None: the
        weighting asks autograd for them."""
        return None
