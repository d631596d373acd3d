"""Gradient aggregation on the shared parameters through TorchJD (Jacobian descent).

The per-task losses' Jacobian with respect to the shared parameters (one row per task) is computed
with ``torchjd.autojac.backward`` and reduced to one gradient by a TorchJD aggregator
(``torchjd.autojac.jac_to_grad``), which *adds* it to the shared parameters' ``.grad``. Every other
parameter (the task-specific ones) gets the plain gradient of ``Σ_k L_k``.

The aggregator is chosen by Hydra on the aggregator itself, e.g.::

    _target_: mtlrec.weighting.aggregation.AggregationWeighting
    aggregator:
      _target_: torchjd.aggregation.UPGrad

Any ``torchjd.aggregation.Aggregator`` works (PCGrad, MGDA, CAGrad, UPGrad, IMTLG, DualProj,
AlignedMTL, NashMTL, ...). Aggregators whose constructor needs the number of tasks (NashMTL's
``n_tasks``) are given as a factory (``_partial_: true``); :meth:`setup` calls it, passing
``n_tasks`` when the factory's signature has that parameter. Stateful aggregators
(``torchjd.Stateful``, e.g. NashMTL) are ``reset()`` in :meth:`setup`, so that no state leaks
between runs.

Mechanics of one step (the caller has zeroed the gradients):
  1. ``autojac.backward(losses, inputs=shared, retain_graph=True)`` fills ``.jac`` of the shared
     parameters;
  2. ``backward_fn(Σ_k L_k)`` fills every parameter's ``.grad``; the shared parameters' ``.grad``
     are detached beforehand and restored afterwards, so this pass only contributes to the
     non-shared parameters (it is the one pass that goes through the trainer's backward);
  3. ``jac_to_grad(shared, aggregator)`` adds the aggregated gradient to the shared ``.grad``.
Cost: the Jacobian pass (T vectorised backward passes) plus one ordinary backward.
With no shared parameters (independent networks) the scheme is exactly ``backward_fn(Σ_k L_k)``.

``level="representation"``: the Jacobian is taken with respect to the shared representation z
(``TaskOutputs.features``, the encoder's output) and the shared parameters *above* it, never with
respect to the encoder's own parameters (embedding tables, an image backbone: millions of them).
The aggregated direction's z-part is then back-propagated once through the encoder, so T
vectorised backward passes stop at z and one ordinary pass crosses the encoder. This is the
representation-level approximation of Sener & Koltun (NeurIPS 2018, MGDA-UB): the aggregator sees
the per-task gradients on z, which bound those on the parameters below. It is what a trainable
image backbone needs; with ``level="parameters"`` (the default, exact) a trainable backbone's
parameters join the Jacobian (T passes through the CNN, T rows over its parameters). Without
``features`` (independent networks), or when nothing below z is trained, both levels are the same.
At this level the trainer's backward runs twice per step (the encoder's pass, then the task
parameters'), so a hook that inspects gradients after the first sees them partly filled.

Data parallel (``trainer.devices>1``): the Jacobian's rows are averaged over the processes (one
all-reduce) before ``jac_to_grad``, so every process aggregates the global batch's rows identically
(aggregation is not linear: averaging each process's aggregated direction would be another
update); the task-specific gradients are averaged by the training module (DDP's own all-reduce is
off for the step). ``level="representation"`` is refused there (its Jacobian's z-block is
per row of each process's share).

Limitations: the shared gradient bypasses ``backward_fn``, so a precision plugin's loss scaling
(fp16 ``GradScaler``) would not apply to it — use fp32 or bf16 with these schemes. Jacobian rows are the tasks present
in ``losses`` whose loss is not exactly 0 (an all-masked batch); NashMTL's ``n_tasks`` is fixed,
so it always gets one row per task (with a zero row it still returns a finite direction).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torchjd import Stateful
from torchjd.aggregation import Aggregator
from torchjd.autojac import backward as jac_backward
from torchjd.autojac import jac, jac_to_grad

from .base import BackwardFn, Weighting

AggregatorSpec = Aggregator | Callable[..., Aggregator] | Mapping


def _build_aggregator(spec: AggregatorSpec, n_tasks: int) -> Aggregator:
    if isinstance(spec, Aggregator):
        return spec
    if isinstance(spec, Mapping):  # an un-instantiated Hydra node (e.g. _recursive_=False)
        from hydra.utils import instantiate

        spec = instantiate(spec, _partial_=True)
    if not callable(spec):
        raise TypeError(
            f"weighting.aggregator must be a torchjd Aggregator or a factory of one, got {spec!r}"
        )
    try:
        params = inspect.signature(spec).parameters
    except (TypeError, ValueError):
        params = {}
    agg = spec(n_tasks=n_tasks) if "n_tasks" in params else spec()
    if not isinstance(agg, Aggregator):
        raise TypeError(f"weighting.aggregator built {agg!r}, not a torchjd Aggregator")
    return agg


class AggregationWeighting(Weighting):
    """Jacobian-descent weighting; see the module docstring.

    ``aggregator``: a ``torchjd.aggregation.Aggregator`` instance, or a factory of one (Hydra
    ``_partial_: true``), called in :meth:`setup` with ``n_tasks`` if it accepts it.
    ``parallel_chunk_size``: forwarded to ``torchjd.autojac.backward`` (``None``: all rows at
    once via ``vmap``; 1: sequential, for models ``vmap`` cannot handle).
    ``optimize_gramian_computation``: forwarded to ``jac_to_grad`` (memory saving for
    Gramian-based aggregators such as UPGrad, MGDA, PCGrad, CAGrad).
    ``level``: ``"parameters"`` (Jacobian over every shared parameter) or ``"representation"``
    (over the shared representation and the shared parameters above it; see the module docstring).
    """

    sets_gradients = True

    def __init__(
        self,
        aggregator: AggregatorSpec,
        parallel_chunk_size: int | None = None,
        optimize_gramian_computation: bool = False,
        level: str = "parameters",
    ) -> None:
        super().__init__()
        if level not in ("parameters", "representation"):
            raise ValueError(f"weighting.level must be parameters or representation, got {level!r}")
        self.level = level
        if isinstance(aggregator, Aggregator):
            self.aggregator: Aggregator | None = aggregator
            self._aggregator_spec: AggregatorSpec | None = None
        else:  # a factory (or config node), built in setup once the number of tasks is known
            self.aggregator = None
            self._aggregator_spec = aggregator
        self.parallel_chunk_size = parallel_chunk_size
        self.optimize_gramian_computation = bool(optimize_gramian_computation)
        self._last_weights_t: tuple[list[str], Tensor] | None = None

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        if self._aggregator_spec is not None:
            self.aggregator = _build_aggregator(self._aggregator_spec, len(self.task_names))
        if isinstance(self.aggregator, Stateful):
            self.aggregator.reset()
        self._shared = [p for p in self._model.shared_parameters if p.requires_grad]
        below = {id(p) for p in self._model.encoder_parameters}
        self._below = [p for p in self._shared if id(p) in below]
        self._above = [p for p in self._shared if id(p) not in below]
        self._task_params = [p for p in self._model.task_parameters if p.requires_grad]
        self._last_weights_t = None

    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        present = [t for t in self.task_names if t in losses]
        loss_list = [losses[t].reshape(()) for t in present]
        total = torch.stack(loss_list).sum()
        if not self._shared:
            backward_fn(total)
            self._last_weights_t = None
            return

        # A task whose loss is exactly 0 had no labelled rows in the batch (the training module
        # returns 0·logits then): its Jacobian row is 0 by absence, not by optimality, and would
        # e.g. zero MGDA's min-norm direction. Its row is dropped, unless the aggregator was built
        # for a fixed number of rows (``n_tasks``, NashMTL), which then sees the zero row.
        if getattr(self.aggregator, "n_tasks", None) is None:
            # (data parallel: a task is kept when any process has labelled rows of it)
            magnitudes = self._global([torch.stack(loss_list).detach().abs()])[0].tolist()
            keep = [j for j, v in enumerate(magnitudes) if v != 0.0]
            present = [present[j] for j in keep]
            loss_list = [loss_list[j] for j in keep]
        if not loss_list:
            backward_fn(total)
            self._last_weights_t = None
            return

        # z without autograd history (nothing trainable below it) holds nothing to aggregate over
        if self.level == "representation" and features is not None and features.requires_grad:
            self._backward_at_representation(loss_list, present, total, features, backward_fn)
            return
        jac_backward(
            loss_list,
            inputs=self._shared,
            retain_graph=True,
            parallel_chunk_size=self.parallel_chunk_size,
        )
        # Plain Σ L_k for the task-specific parameters only: restricting the backward to them
        # leaves the shared .grad untouched and skips the shared trunk's weight gradients.
        task_params = self._task_params
        if task_params:
            backward_fn(total, inputs=task_params)
        else:  # nothing task-specific: the backward_fn still runs once (strategies count on it)
            saved = [p.grad for p in self._shared]
            try:
                backward_fn(total)
            finally:
                for p, g in zip(self._shared, saved, strict=True):
                    p.grad = g
        # data parallel: the global batch's Jacobian (one all-reduce), so that every process
        # aggregates the same rows into the same direction
        for param, rows in zip(self._shared, self._global([p.jac for p in self._shared]), strict=True):
            param.jac = rows
        w = self._aggregate(self._shared)
        self._last_weights_t = (present, w.detach()) if w is not None else None

    def check_trainer(self, precision: str, world_size: int) -> None:
        super().check_trainer(precision, world_size)
        if self.level == "representation" and world_size > 1:
            raise ValueError(
                f"weighting.level=representation: the Jacobian on the shared representation has one column block "
                f"per row of each process's share, so it cannot be averaged over {world_size} processes; use "
                f"weighting.level=parameters, or trainer.devices=1"
            )

    def _aggregate(self, tensors: list[Tensor]) -> Tensor | None:
        """``jac_to_grad`` outside autocast: under ``bf16-mixed`` the Gramian ``J Jᵀ`` would be a
        bfloat16 matmul (too coarse for the solvers, and one numpy cannot read)."""
        device = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return jac_to_grad(tensors, self.aggregator, optimize_gramian_computation=self.optimize_gramian_computation)

    def _backward_at_representation(self, loss_list: list[Tensor], present: list[str], total: Tensor,
                                    features: Tensor, backward_fn: BackwardFn) -> None:
        jacobians = jac(loss_list, inputs=[features, *self._above], retain_graph=True,
                        parallel_chunk_size=self.parallel_chunk_size)
        # the stand-in carries z's Jacobian rows into jac_to_grad, and back its .grad; in float32, as the
        # parameters are: under bf16 autocast z is bfloat16, which the aggregators' solvers (numpy,
        # cvxpy) cannot read
        stand_in = features.detach().float().requires_grad_()
        stand_in.jac = jacobians[0].float()
        for param, rows in zip(self._above, jacobians[1:], strict=True):
            param.jac = rows
        w = self._aggregate([stand_in, *self._above])
        self._last_weights_t = (present, w.detach()) if w is not None else None
        task_params = self._task_params
        if self._below:  # the aggregated z-direction, once through the encoder
            backward_fn((features * stand_in.grad).sum(), inputs=self._below, retain_graph=bool(task_params))
        if task_params:
            backward_fn(total, inputs=task_params)

    def weight_values(self, device: torch.device) -> Tensor:
        if self._last_weights_t is None:
            return super().weight_values(device)
        present, w = self._last_weights_t
        if len(present) == len(self.task_names):
            return w.to(device=device, dtype=torch.float32)
        return super().weight_values(device)  # rows dropped this step (the aggregator synced already)

    def weights(self) -> dict[str, float]:
        """The aggregator's weights on the task gradients at the last step (shared parameters):
        0 for a task whose row was dropped (zero loss); 1 for every task before the first step or
        with an aggregator that is not a weighted combination of the rows."""
        if self._last_weights_t is None:
            return {t: 1.0 for t in self.task_names}
        present, w = self._last_weights_t
        out = {t: 0.0 for t in self.task_names}
        out.update(zip(present, w.tolist(), strict=True))
        return out
