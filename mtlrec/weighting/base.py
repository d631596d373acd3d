"""The one interface through which per-task losses become a parameter update.

The training module never asks which weighting it holds: it computes the per-task losses, calls
:meth:`Weighting.backward`, then steps the model's optimizer. A weighting with learnable weights
owns them (as parameters of this module) *and* their optimizer, so its learning rate never leaks
into the model's optimizer and vice versa.

Gradient-based schemes get what they need from :class:`SharedModel`: the shared parameters
(for gradient aggregation) and the last shared layer (for GradNorm).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mtlrec.training.collective import mean_over_processes

BackwardFn = Callable[..., None]  # (loss, **kwargs of Tensor.backward, e.g. inputs=...)


@dataclass
class SharedModel:
    """What a weighting may know about the architecture (a view, not a submodule).

    ``shared_parameters``: parameters used by more than one task (empty for independent nets).
    ``last_shared_parameters``: the weights W of the last shared layer (GradNorm's W), or empty.
    ``task_parameters``: every other parameter; each element of it is used by one task only
    (towers, MMoE gates, PLE task experts — several tasks' experts may sit stacked in one tensor,
    which is why this is a flat list rather than a per-task dict).
    ``encoder_parameters``: the shared parameters below ``TaskOutputs.features`` (the input
    encoder: embeddings, an image backbone), a subset of ``shared_parameters``.
    """

    shared_parameters: list[nn.Parameter]
    last_shared_parameters: list[nn.Parameter]
    task_parameters: list[nn.Parameter]
    encoder_parameters: list[nn.Parameter] = field(default_factory=list)
    # the module holding ``last_shared_parameters``, when it can give every task's gradient on them
    # from the tasks' gradients on its output (``capture_last_layer``, ``last_layer_output``,
    # ``last_layer_gradients``: :class:`~mtlrec.models.blocks.experts.ExpertLayer`); else None
    last_shared_layer: nn.Module | None = None


class Weighting(nn.Module, ABC):
    """Base class: combine per-task losses into gradients on the model's parameters.

    Lifecycle, driven by the training module:
      ``setup(task_names, model, labelled_counts)`` once before training (a scheme does its own
      initialisation in :meth:`_on_setup`, which ``setup`` calls last);
      ``backward(losses, backward_fn)`` every training step (fills ``.grad`` of model parameters,
      and updates the weighting's own learnable weights, if any);
      ``on_train_epoch_end(epoch_mean_losses)`` at the end of each training epoch.
    ``backward_fn`` is the trainer's backward (Lightning's ``manual_backward``) to be used for the
    final scalar, so precision plugins and strategies keep working. ``features`` is the forward
    pass's ``TaskOutputs.features`` (the shared representation, or ``None``); only schemes that can
    work at the representation level read it.
    """

    # True for schemes that take gradients outside ``backward_fn`` (GradNorm's per-task gradients
    # on its last shared layer, which it combines with the model's own gradient read back from
    # ``.grad``; the aggregators write the shared parameters' ``.grad``): those gradients never pass
    # through fp16's loss scaling (the scaler would divide what they write by its scale, and the
    # scale would be in what they read) nor through a multi-device strategy's all-reduce (what
    # they read must be this process's own). Under data parallelism the training module then
    # turns DDP's all-reduce off for the step and averages every gradient itself afterwards
    # (:func:`mtlrec.training.collective.average_gradients`); the scheme makes its own decisions on
    # global quantities (:meth:`_global`), so they are the same on every process.
    sets_gradients: bool = False

    # True for schemes whose combination of the per-task losses is the same for every seed and
    # every step (no state learned from the losses), so K seeds trained as one stacked model
    # (``seeds=K``, :mod:`mtlrec.training.stacked`) can share one instance: :meth:`backward` then
    # receives ``[K]`` losses per task, and the sum of its ``[K]`` result over the seeds is what
    # gets differentiated.
    stackable: bool = False

    def check_trainer(self, precision: str, world_size: int) -> None:
        """Refuse, in one line, a trainer this scheme's update would be silently wrong under."""
        if self.sets_gradients and str(precision).startswith("16"):
            raise ValueError(
                f"trainer.precision={precision}: {type(self).__name__} sets gradients outside the trainer's backward, "
                f"which fp16's loss scaling does not see (the update would be divided by the scale); use "
                f"trainer.precision=32 or bf16-mixed, or a loss-based weighting (fixed, uncertainty, dwa)"
            )

    @staticmethod
    def _global(tensors: Sequence[Tensor]) -> list[Tensor]:
        """The tensors' means over the processes of a data-parallel run (one all-reduce for all of
        them); on one process, the tensors themselves. A scheme that sets gradients reads per-task
        losses and gradients through this before deciding anything from them."""
        return mean_over_processes(tensors)

    def setup(
        self,
        task_names: Sequence[str],
        model: SharedModel,
        labelled_counts: Mapping[str, int],
        *,
        task_kinds: Mapping[str, str] | None = None,
    ) -> None:
        """``task_kinds`` (optional): task -> ``"binary" | "multiclass" | "regression"`` (the
        schema's ``TaskSpec.kind``); only schemes whose form depends on the likelihood (uncertainty
        weighting) read it."""
        self.task_names = list(task_names)
        self.task_kinds = dict(task_kinds) if task_kinds is not None else {}
        self._model = model  # plain attribute: a view, never registered as a submodule
        self._on_setup(labelled_counts)

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        """Scheme-specific setup, called at the end of :meth:`setup` (``task_names``,
        ``task_kinds`` and the model view are set by then)."""

    @abstractmethod
    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        """Fill gradients for one step from the per-task (scalar) losses."""

    def weights(self) -> dict[str, float]:
        """Current per-task weights, for logging (equal weights unless overridden)."""
        return {t: 1.0 for t in self.task_names}

    def weight_values(self, device: torch.device) -> Tensor:
        """The current weights as a tensor on ``device``, in ``task_names`` order, read every
        training step: without waiting for the device (no ``.tolist()``, no new host-to-device
        copy per step). Schemes whose weights are tensors override it; here the (Python) weights
        are copied once per change of their values."""
        values = tuple(self.weights()[t] for t in self.task_names)
        cached = getattr(self, "_weight_values", None)
        if cached is None or cached[0] != (values, device):
            cached = ((values, device), torch.tensor(values, dtype=torch.float32, device=device))
            self._weight_values = cached
        return cached[1]

    def on_train_epoch_end(self, epoch_mean_losses: Mapping[str, float]) -> None:
        """Hook for schemes that adapt per epoch (DWA)."""


def weighted_sum(losses: Mapping[str, Tensor], weights: Mapping[str, float | Tensor]) -> Tensor:
    """Σ_k w_k·L_k over the tasks present in ``losses``."""
    return torch.stack([weights[k] * v for k, v in losses.items()]).sum()
