"""Weightings with learnable task weights that step them with an optimizer of their own.

Why the weighting owns its optimizer, rather than handing its weights to the model's:

* The weights are not trained on the model's loss. GradNorm steps them on ``L_grad`` and
  uncertainty weighting on its likelihood objective; the model only ever sees the weights detached.
  In the model's optimizer they would get the wrong gradient, or none.
* Their learning rate (and optimizer kind) is a property of the scheme (GradNorm's 0.025,
  uncertainty's 1e-2), independent of the model's learning rate, schedule and weight decay.
* They are stepped inside :meth:`Weighting.backward`, from a small separate graph, so a precision
  plugin's loss scaling never reaches them and the training module needs no knowledge of them.

The optimizer is built lazily at the first step, so it holds the parameters that :meth:`setup`
created, wherever the module has been moved since. The trainer checkpoints only the model's
optimizer, so this one's state travels through the module's ``state_dict`` (``get_extra_state`` /
``set_extra_state``) and is loaded into the optimizer when it is built: a resumed run continues
with the same (e.g. Adam moment) state instead of restarting it.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from .base import Weighting

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class LearnedWeighting(Weighting):
    """Base for schemes whose weights are stepped by their own optimizer; see the module docstring.

    ``lr``: learning rate of the default Adam optimizer (ignored when ``optimizer`` is given).
    ``optimizer``: a factory taking the parameters, e.g. a Hydra ``_partial_`` optimizer.
    Subclasses create their parameters in :meth:`_on_setup`, name them in
    :meth:`_learned_parameters` and call :meth:`_step_learned` with their objective each step.
    """

    def __init__(self, lr: float, optimizer: OptimizerFactory | None = None) -> None:
        super().__init__()
        self.lr = float(lr)
        self._optimizer_factory = optimizer
        self._opt: torch.optim.Optimizer | None = None
        self._pending_opt_state: dict | None = None

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        super()._on_setup(labelled_counts)
        self._opt = None  # setup creates new parameters: the next step builds a new optimizer

    @abstractmethod
    def _learned_parameters(self) -> list[nn.Parameter]:
        """The parameters this weighting's optimizer steps."""

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self._learned_parameters()
        if self._optimizer_factory is not None:
            opt = self._optimizer_factory(params)
        else:
            # fused: one kernel for the step, not ~20 tiny ops (on a small model's step each op's
            # fixed cost is what counts); where the device has no fused Adam, the default one
            fused = all(p.device.type in ("cpu", "cuda") for p in params)
            opt = torch.optim.Adam(params, lr=self.lr, fused=fused or None)
        if self._pending_opt_state is not None:  # restored from a checkpoint
            opt.load_state_dict(self._pending_opt_state)
            self._pending_opt_state = None
        return opt

    def _index(self, idx: list[int], device: torch.device) -> Tensor:
        """The present tasks' positions as a tensor on ``device``, cached: a new host-to-device
        copy every step would wait for the device."""
        key = (tuple(idx), device)
        if getattr(self, "_index_key", None) != key:
            self._index_t, self._index_key = torch.tensor(idx, device=device), key
        return self._index_t

    def _step_learned(self, objective: Tensor) -> None:
        """One optimizer step of the learned parameters on ``objective`` (gradient taken with
        respect to them only, so the model's ``.grad`` is left as it is)."""
        opt = self._optimizer()
        opt.zero_grad(set_to_none=True)
        # .backward, not autograd.grad: under data parallel, DDP's reducer all-reduces what it
        # accumulates into .grad, which keeps the learned weights equal on every process
        objective.backward(inputs=self._learned_parameters())
        opt.step()

    def _step_with_gradients(self, gradients: list[Tensor]) -> None:
        """One optimizer step of the learned parameters with their gradients given: for an
        objective whose gradient has a closed form, which then needs no autograd pass. No
        all-reduce sees them: under data parallel they must already be global (GradNorm forms
        them from all-reduced quantities)."""
        opt = self._optimizer()
        for param, grad in zip(self._learned_parameters(), gradients, strict=True):
            param.grad = grad.to(param.dtype)
        opt.step()

    def _optimizer(self) -> torch.optim.Optimizer:
        """The learned parameters' optimizer, made at the first step (after setup placed them)."""
        if self._opt is None:
            self._opt = self._make_optimizer()
        return self._opt

    # The weights' optimizer state travels with the module's state_dict (checkpoint resume).
    def get_extra_state(self) -> dict:
        opt = self._opt.state_dict() if self._opt is not None else self._pending_opt_state
        return {"optimizer": opt}

    def set_extra_state(self, state: dict) -> None:
        # a copy: the source may be a live optimizer that keeps stepping
        self._pending_opt_state = copy.deepcopy(state.get("optimizer"))
        self._opt = None
