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

Cost. The model's backward of ``Σ_i w_i·L_i`` gives W's gradient ``Σ_i w_i∇_W L_i`` as usual. Of
the T per-task gradients on W, T − 1 come from one ``torch.autograd.grad`` of those tasks' losses
(for T − 1 > 1 their one-hot output gradients travel together, ``is_grads_batched``). It only
traverses the graph between those losses and W (the task heads and the last shared layer), never
the rest of the trunk. The last one is what remains of W's gradient:
``∇_W L_r = (∇_W − Σ_{i≠r} w_i∇_W L_i) / w_r``, taking for r the task of largest weight among those
with a non-zero loss (with every task present, w_r ≥ 1, as the weights sum to T). In float32 its
rounding error relative to ``G_r`` is about float eps × ``Σ_i G_i / G_r``, small wherever the
weighted norms are comparable, which is what GradNorm drives them to. Under autocast or with
half-precision gradients that error would be bf16's, so there all T gradients come from the partial
backward. So GradNorm costs one partial backward of T − 1 tasks and T − 1 extra weight gradients of
W over fixed weighting.
``python -m mtlrec.bench_weightings`` measures that floor (a bare loop plus one ``autograd.grad``
on W per task but one) beside GradNorm. On the small Census MMoE (131 inputs, 8 × 16 experts,
a ~6 ms step) the floor was 1.08× the bare loop and GradNorm 1.34× fixed weighting: the rest is
the fixed cost of GradNorm's few dozen small ops per step (norms, ratios, targets, the weights'
step). With experts [256, 128, 64] GradNorm was 1.01× fixed (``benchmarks/weightings_census.log``).
Where the layer holding W can form the weight gradients itself (an expert layer,
``SharedModel.last_shared_layer``), the partial backward stops at that layer's pre-activation and
``∇_W L_t = xᵀ ∂L_t/∂z`` is one einsum over the kept input: vmap's batched backward to W expanded
the input T times (measured 3× slower for that part). Why T − 1 and not all T: on MMoE with experts
[256, 128, 64] (torch.profiler, 1 thread, 2 tasks), the T-batched backward through the gates' mixing
of the experts (``aten::mul`` and ``aten::sum``) cost 4.4–7.7 ms per step over fixed weighting in
three profiles; with one task's plain backward, 0.7 ms.

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
    """``[∇_p L_1, …, ∇_p L_n]`` of the n given losses stacked, ``[n, *p.shape]``, for each ``p`` in
    ``params``, from one backward pass: the n one-hot output gradients travel together (``is_grads_batched``, a vmap
    over the backward), so the graph between the losses and W is walked once, not n times, and
    the n weight gradients of W are one batched matmul. A parameter a task does not reach gets
    zeros."""
    grads = _batched_grad(losses, params)
    return [g if g is not None else p.new_zeros(len(losses), *p.shape) for p, g in zip(params, grads)]


def _batched_grad(losses: Tensor, inputs: list[Tensor]) -> list[Tensor | None]:
    """``autograd.grad`` of each of the T ``losses``, stacked ``[T, *x.shape]`` per input ``x``
    (``None`` where no loss reaches it; zeros for all inputs when T = 0). For T = 1 a plain
    backward, without the vmap that ``is_grads_batched`` costs."""
    if len(losses) == 0:
        return [x.new_zeros(0, *x.shape) for x in inputs]
    if len(losses) == 1:
        grads = torch.autograd.grad(losses[0], inputs, retain_graph=True, allow_unused=True)
        return [None if g is None else g.unsqueeze(0) for g in grads]
    eye = torch.eye(len(losses), dtype=losses.dtype, device=losses.device)
    return list(torch.autograd.grad(losses, inputs, grad_outputs=eye, retain_graph=True, allow_unused=True,
                                    is_grads_batched=True))


def _full_precision(losses: Tensor, params: list[Tensor]) -> bool:
    """Whether the losses and W are float32/64 and no autocast is on for their device: where the
    remainder's subtraction is accurate (its error is then float eps × Σ_i G_i / G_r)."""
    full = (torch.float32, torch.float64)
    return (losses.dtype in full and all(p.dtype in full for p in params)
            and not torch.is_autocast_enabled(losses.device.type))


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

        index = self._index(idx, w_all.device)
        w = w_all.detach().index_select(0, index)
        stacked = torch.stack([losses[t].reshape(()) for t in present])
        w_fixed = w.to(stacked.dtype)
        # ``largest``, the task of largest weight among those with a loss, takes its gradient on W
        # from what remains of the model's (see the module docstring); the others, ``rows``, come
        # from one partial backward before it. In reduced precision (autocast, half-precision
        # gradients) that remainder would carry the others' rounding: all T come from the pass.
        remainder = _full_precision(stacked, last_shared)
        if remainder:
            key = w_fixed * (stacked.detach() != 0)  # a task without labelled rows is never the remainder
            order = torch.argsort(key, descending=True, stable=True).to(stacked.device)
            rows, largest = order[1:], order[0]
        else:
            rows = torch.arange(len(present), device=stacked.device)
        before = [None if p.grad is None else p.grad.clone() for p in last_shared] if remainder else []
        row_losses = stacked.index_select(0, rows)
        row_grads = self._layer_gradients(row_losses, last_shared)
        if row_grads is None:
            row_grads = _task_gradients(row_losses, last_shared)
        # Model gradient: Σ w_i(t)·L_i with the current weights held constant.
        backward_fn((w_fixed * stacked).sum())
        task_grads = row_grads  # task_grads[k][i] is ∇_{W_k} L_i, tasks in ``present`` order
        if remainder:
            task_grads = self._with_remainder(last_shared, row_grads, before, w_fixed, order, rows, largest)
        loss_vals = _acc(stacked.detach()).to(device=w_all.device, dtype=self.initial_losses.dtype)
        # Data parallel: the global batch's per-task gradients on W and losses (one all-reduce), so
        # the norms, L_i(0), the loss ratios and the weights are the same on every process.
        *task_grads, loss_vals = self._global([*task_grads, loss_vals])
        norms_t = torch.stack([_acc(g.detach()).flatten(1).pow(2).sum(1) for g in task_grads]).sum(0).sqrt()
        norms_t = norms_t.to(device=w_all.device, dtype=w_all.dtype)

        # A task whose loss is exactly 0 had no labelled rows in the batch (the training module
        # returns 0·logits then): it takes no part in this step's GradNorm update. Masks, not
        # Python branches, so no device sync per step.
        valid = loss_vals > 0
        with torch.no_grad():
            init = self.initial_losses.index_select(0, index)
            init = torch.where(torch.isnan(init) & valid, loss_vals, init)  # L_i(0): first step
            self.initial_losses.index_copy_(0, index, init)

        # GradNorm loss on the weights, Σ_i |G_i − target_i| over the valid tasks, targets constant.
        # Its gradient has a closed form, ∂/∂w_i = sign(G_i − target_i)·‖∇_W L_i‖ (torch's |x|'
        # at 0 is 0 too), so the weights' optimizer steps on it with no autograd pass.
        with torch.no_grad():
            vf = valid.to(w.dtype)
            n_valid = vf.sum().clamp_min(1.0)
            g = w * norms_t  # G_i = w_i‖∇_W L_i‖  (w_i > 0)
            safe_init = torch.where(valid, init, torch.ones_like(init))
            ratio = torch.where(valid, loss_vals / safe_init, torch.zeros_like(loss_vals))  # L̃_i
            r = ratio / ((ratio * vf).sum() / n_valid).clamp_min(torch.finfo(ratio.dtype).tiny)
            g_bar = (g * vf).sum() / n_valid
            target = g_bar * r.pow(self.alpha)
            grad = torch.zeros_like(w_all).index_add_(0, index, torch.sign(g - target) * norms_t * vf)

        self._step_with_gradients([grad])
        with torch.no_grad():
            w_all.clamp_(min=self.min_weight)
            w_all.mul_(len(self.task_names) / w_all.sum())

        # Kept as tensors (no device sync per step); read through last_stats().
        self._last = (present, norms_t, g, target, ratio, r)

    @staticmethod
    def _with_remainder(last_shared: list[Tensor], row_grads: list[Tensor], before: list[Tensor | None],
                        w: Tensor, order: Tensor, rows: Tensor, largest: Tensor) -> list[Tensor]:
        """Every task's gradient on each W, ``[T, *W.shape]`` in task order: the ``rows`` tasks'
        from the partial backward, the ``largest`` task's as ``(∇_W − Σ_rows w_i∇_W L_i) / w_largest``
        from the model's gradient on W (what the backward added to ``.grad``)."""
        w_rows, inverse = w.index_select(0, rows), torch.argsort(order)
        task_grads = []
        with torch.no_grad():
            for param, grads, old in zip(last_shared, row_grads, before):
                total = torch.zeros_like(param) if param.grad is None else param.grad - (0 if old is None else old)
                rest = total - torch.tensordot(w_rows.to(grads.dtype), grads, dims=1)  # w_largest·∇_W L_largest
                own = (rest / w[largest].to(rest.dtype)).unsqueeze(0)
                task_grads.append(torch.cat([own, grads]).index_select(0, inverse))
        return task_grads

    def _layer_gradients(self, stacked: Tensor, last_shared: list[Tensor]) -> list[Tensor] | None:
        """The given losses' gradients on W from the layer that holds it, when it can form them (an
        expert layer): their gradients on its pre-activation ``z`` in one batched backward
        (which stops at ``z``), then ``∇_W L_t = xᵀ ∂L_t/∂z`` for all t in one einsum. ``None``
        (the caller asks autograd for W directly) for any other layer, or W partly frozen."""
        layer = self._model.last_shared_layer
        if layer is None:
            return None
        output = layer.last_layer_output()
        if output is None or [id(p) for p in last_shared] != [id(p) for p in layer.last_layer_parameters()]:
            return None
        (grad_output,) = _batched_grad(stacked, [output])
        if grad_output is None:  # no task in ``stacked`` reaches W
            grad_output = output.new_zeros(len(stacked), *output.shape)
        return layer.last_layer_gradients(grad_output)

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
