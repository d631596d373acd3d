"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018), Algorithm 1.

Per step, with W the weights of the last shared layer (``SharedModel.last_shared_parameters``):

  ``G_i  = ‖∇_W (w_i·L_i)‖₂ = w_i·‖∇_W L_i‖₂``     (w_i > 0)
  ``Ḡ    = mean_i G_i``
  ``L̃_i  = L_i(t) / L_i(0)``                       (L_i(0): the task's loss at its first step)
  ``r_i  = L̃_i / mean_j L̃_j``
  ``L_grad = Σ_i |G_i − Ḡ·r_i^α|₁``                 (targets ``Ḡ·r_i^α`` held constant)

The model gets the gradient of ``Σ_i w_i(t)·L_i`` (weights detached) through one ``backward_fn``
call; the weights get ``∂L_grad/∂w_i = sign(G_i − target_i)·‖∇_W L_i‖`` and are stepped by this
module's own optimizer (default Adam, lr 0.025), then renormalised so that ``Σ_i w_i = T``.

Cost: every ``∇_W L_i`` comes from one ``torch.autograd.grad`` of the stacked losses with
one-hot output gradients batched (``is_grads_batched``): it only traverses the graph between the
losses and W (the task heads and the last shared layer), once for all tasks, never the rest of the
trunk, and forms the T weight gradients of W as one batched matmul. The model's backward then
skips W (its weight gradient is ``Σ_i w_i∇_W L_i`` from those). Because ``G_i`` is linear in
``w_i`` no second-order graph is needed. So GradNorm's floor over fixed weighting is T − 1 extra
weight gradients of W: on MMoE with one expert layer (Census: 131 inputs, 8 × 16 experts), the
expert layer holds most of the multiply-adds and the floor is ≈ 1.3× (``python -m
mtlrec.bench_weightings`` prints the measured ratio). Where the layer holding W can form the
weight gradients itself (an expert layer, ``SharedModel.last_shared_layer``), the batched backward
stops at that layer's pre-activation and ``∇_W L_t = xᵀ ∂L_t/∂z`` is one einsum over the kept input:
vmap's batched backward to W expanded the input T times (measured 3× slower for that part).

Positivity. The paper's update followed by renormalisation does not keep ``w_i > 0``: when one
task's gradient norm is ~100× another's, a single (SGD-like) step ``η·‖∇_W L_i‖`` can exceed
``w_i`` and renormalising a negative weight keeps it negative (a negative weight means gradient
*ascent* on that task). Fix: after the optimizer step, each weight is clamped to a small positive
floor ``min_weight`` (default 1e-3, i.e. 1/1000 of the mean weight) *before* renormalising. This
keeps the paper's update exactly whenever the step stays positive (the common case), unlike a
``softmax``/``exp`` reparametrisation, which changes the update geometry on every step. The floor
does not absorb: at the floor ``G_i = min_weight·‖∇_W L_i‖`` is below its target unless the task is
far ahead of the others, so ``∂L_grad/∂w_i < 0`` pushes the weight back up.

A task whose loss is exactly 0 in a step (no labelled rows in the batch: the training module
returns ``0·logits``) is left out of that step's Ḡ, mean loss ratio and L_grad, and its L_i(0) is
recorded at its first step with a non-zero loss. Tasks missing from ``losses`` are left out too.

No shared layer (``last_shared_parameters`` empty, e.g. independent single-task networks): there is
no common W to balance gradients on, so the weights stay at 1 (plain sum of the losses) and a
warning is issued once.

Data parallel (``trainer.devices>1``): each process holds its share of the global batch. The
per-task gradients on W and the losses are averaged over the processes (one all-reduce) before the
norms, ``L_i(0)``, the ratios and ``L_grad`` are formed, so the weights take the same step on every
process and equal those of one process on the global batch; the model's gradients are averaged by
the training module afterwards (``MultiTaskModule``, with DDP's own all-reduce off for the step).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .base import BackwardFn
from .learned import LearnedWeighting, OptimizerFactory


def _acc(t: Tensor) -> Tensor:
    """At least float32 (half-precision gradients/losses are upcast; float64 is kept)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _task_gradients(losses: Tensor, params: list[Tensor]) -> list[Tensor]:
    """``[∇_p L_1, …, ∇_p L_T]`` stacked, ``[T, *p.shape]``, for each ``p`` in ``params``, from one
    backward pass: the T one-hot output gradients travel together (``is_grads_batched``, a vmap
    over the backward), so the graph between the losses and W is walked once, not T times, and
    the T weight gradients of W are one batched matmul. A parameter a task does not reach gets
    zeros."""
    eye = torch.eye(len(losses), dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(losses, params, grad_outputs=eye, retain_graph=True, allow_unused=True,
                                is_grads_batched=True)
    return [g if g is not None else p.new_zeros(len(losses), *p.shape) for p, g in zip(params, grads)]


class GradNormWeighting(LearnedWeighting):
    """GradNorm; see the module docstring.

    ``alpha``: restoring-force asymmetry (paper default 1.5; 0.12 in its toy example).
    ``lr``: learning rate of the default Adam optimizer on the weights (ignored when
    ``optimizer`` — a factory taking the parameters, e.g. a Hydra ``_partial_`` optimizer — is given).
    ``min_weight``: positivity floor applied before renormalisation (must be > 0).
    """

    sets_gradients = True

    def __init__(
        self,
        alpha: float = 1.5,
        lr: float = 0.025,
        min_weight: float = 1e-3,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(lr, optimizer)
        if min_weight <= 0:
            raise ValueError(f"weighting.min_weight must be > 0, got {min_weight}")
        self.alpha = float(alpha)
        self.min_weight = float(min_weight)
        self._warned_no_shared = False
        self._last: tuple | None = None

    def _on_setup(self, labelled_counts: Mapping[str, int]) -> None:
        super()._on_setup(labelled_counts)
        n = len(self.task_names)
        self.task_weights = nn.Parameter(torch.ones(n))
        # L_i(0); NaN until the task's first step. A buffer so it is checkpointed with the weights.
        self.register_buffer("initial_losses", torch.full((n,), float("nan")))
        if self._model.last_shared_layer is not None:  # it keeps what _layer_gradients reads
            self._model.last_shared_layer.capture_last_layer = True
        self._warned_no_shared = False
        self._last = None

    def _learned_parameters(self) -> list[nn.Parameter]:
        return [self.task_weights]

    def backward(self, losses: Mapping[str, Tensor], backward_fn: BackwardFn, features: Tensor | None = None) -> None:
        idx = [i for i, t in enumerate(self.task_names) if t in losses]
        present = [self.task_names[i] for i in idx]
        w_all = self.task_weights
        last_shared = [p for p in self._model.last_shared_parameters if p.requires_grad]

        if not last_shared:
            if not self._warned_no_shared:
                warnings.warn(
                    "GradNorm: the architecture has no shared layer (last_shared_parameters is "
                    "empty); task weights stay fixed at 1",
                    stacklevel=2,
                )
                self._warned_no_shared = True
            backward_fn(torch.stack([losses[t].reshape(()) for t in present]).sum())
            return

        # ∇_W L_i for every task present in one backward pass to W (graph kept for the model's
        # backward): ``task_grads[k][i]`` is ∇_{W_k} L_i. See _task_gradients.
        stacked = torch.stack([losses[t].reshape(()) for t in present])
        task_grads = self._layer_gradients(stacked, last_shared)
        if task_grads is None:
            task_grads = _task_gradients(stacked, last_shared)
        loss_vals = _acc(stacked.detach()).to(device=w_all.device, dtype=self.initial_losses.dtype)
        # Data parallel: the global batch's per-task gradients on W and losses (one all-reduce), so
        # the norms, L_i(0), the loss ratios and the weights are the same on every process.
        *task_grads, loss_vals = self._global([*task_grads, loss_vals])
        norms_t = torch.stack([_acc(g.detach()).flatten(1).pow(2).sum(1) for g in task_grads]).sum(0).sqrt()
        norms_t = norms_t.to(device=w_all.device, dtype=w_all.dtype)

        index = self._index(idx, w_all.device)
        # A task whose loss is exactly 0 had no labelled rows in the batch (the training module
        # returns 0·logits then): it takes no part in this step's GradNorm update. Masks, not
        # Python branches, so no device sync per step.
        valid = loss_vals > 0
        with torch.no_grad():
            init = self.initial_losses.index_select(0, index)
            init = torch.where(torch.isnan(init) & valid, loss_vals, init)  # L_i(0): first step
            self.initial_losses.index_copy_(0, index, init)

        w = w_all.index_select(0, index)

        # Model gradient: Σ w_i(t)·L_i with the current weights held constant. W's part is
        # Σ w_i·∇_W L_i from the per-task gradients already in hand, so the backward pass skips W
        # (its weight-gradient matmul is the costly one): GradNorm then costs about one extra
        # W-gradient per task beyond the first, not one per task.
        w_fixed = w.detach().to(stacked.dtype)
        others = self._parameters_besides(last_shared)
        if not others:
            backward_fn((w_fixed * stacked).sum())
        else:
            backward_fn((w_fixed * stacked).sum(), inputs=others)
            with torch.no_grad():
                for param, grads in zip(last_shared, task_grads):
                    total = torch.tensordot(w_fixed.to(grads.dtype), grads, dims=1).to(param.dtype)  # Σ_i w_i∇_W L_i
                    param.grad = total if param.grad is None else param.grad + total

        # GradNorm loss on the weights (targets constant), over the valid tasks.
        vf = valid.to(w.dtype)
        n_valid = vf.sum().clamp_min(1.0)
        g = w * norms_t  # G_i = w_i‖∇_W L_i‖  (w_i > 0)
        with torch.no_grad():
            safe_init = torch.where(valid, init, torch.ones_like(init))
            ratio = torch.where(valid, loss_vals / safe_init, torch.zeros_like(loss_vals))  # L̃_i
            r = ratio / ((ratio * vf).sum() / n_valid).clamp_min(torch.finfo(ratio.dtype).tiny)
            g_bar = (g * vf).sum() / n_valid
            target = g_bar * r.pow(self.alpha)
        l_grad = ((g - target).abs() * vf).sum()

        self._step_learned(l_grad)
        with torch.no_grad():
            w_all.clamp_(min=self.min_weight)
            w_all.mul_(len(self.task_names) / w_all.sum())

        # Kept as tensors (no device sync per step); read through last_stats().
        self._last = (present, norms_t, g.detach(), target, ratio, r)

    def _layer_gradients(self, stacked: Tensor, last_shared: list[Tensor]) -> list[Tensor] | None:
        """Every task's gradient on W from the layer that holds it, when it can form them (an
        expert layer): the tasks' gradients on its pre-activation ``z`` in one batched backward
        (which stops at ``z``), then ``∇_W L_t = xᵀ ∂L_t/∂z`` for all t in one einsum. ``None``
        (the caller asks autograd for W directly) for any other layer, or W partly frozen."""
        layer = self._model.last_shared_layer
        if layer is None:
            return None
        output = layer.last_layer_output()
        if output is None or [id(p) for p in last_shared] != [id(p) for p in layer.last_layer_parameters()]:
            return None
        eye = torch.eye(len(stacked), dtype=stacked.dtype, device=stacked.device)
        (grad_output,) = torch.autograd.grad(stacked, output, grad_outputs=eye, retain_graph=True,
                                             is_grads_batched=True)
        return layer.last_layer_gradients(grad_output)

    def _parameters_besides(self, last_shared: list[Tensor]) -> list[Tensor]:
        """Every trainable model parameter except W (cached: the partition never changes)."""
        key = tuple(id(p) for p in last_shared)
        if getattr(self, "_others_key", None) != key:
            skip = set(key)
            params = self._model.shared_parameters + self._model.task_parameters
            self._others = [p for p in params if p.requires_grad and id(p) not in skip]
            self._others_key = key
        return self._others

    def last_stats(self) -> dict[str, dict[str, float]]:
        """Per task of the last step: ‖∇_W L_i‖, G_i, target_i, L̃_i and r_i (for tests/plots)."""
        if self._last is None:
            return {}
        present, *vals = self._last
        names = ("grad_norm", "G", "target", "loss_ratio", "r")
        cols = [v.tolist() for v in vals]
        return {t: {n: c[j] for n, c in zip(names, cols)} for j, t in enumerate(present)}

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.task_weights.detach().tolist(), strict=True))

    def weight_values(self, device: torch.device) -> Tensor:
        return self.task_weights.detach().clone().to(device)
