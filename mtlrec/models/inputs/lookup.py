"""An embedding lookup whose backward on CPU is one ``index_add`` instead of
``embedding_dense_backward``.

Why: on CPU, ``embedding_dense_backward`` is the slowest op of a small recommendation model's step.
On Census-Income (31 fields, 1,024 rows, a 510 × 4 table) it takes 1.8–2.0 ms of a ~9 ms MMoE step on
one thread. ``zeros(V, D).index_add(0, ids, grad)`` computes the same sum in 0.28–0.39 ms.
Measured on one thread, with ``torch.ops.aten.embedding_dense_backward`` against ``index_add``:

- 100k × 16 with 4,096 × 26 ids: 22.8 → 5.1 ms;
- 300k × 16: 21.7 → 9.8 ms;
- 1M × 16: 69 → 95 ms, slower. Scattered adds into a 64 MB table miss the cache, and the dense
  backward's sort avoids that.

So the lookup takes this path only on CPU, for tables of at most :data:`INDEX_ADD_LIMIT` elements,
and not under ``torch.compile``, where Inductor makes its own backward. The gradient is the same
sum of the same rows; ``tests/models/test_inputs.py`` checks it is equal to ``nn.Embedding``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

INDEX_ADD_LIMIT = 8 * 2**20  # table elements (32 MiB of fp32): beyond this the dense backward was faster


class _IndexAddLookup(torch.autograd.Function):
    """``weight[ids]`` with ∂L/∂weight = Σ over lookups of the row gradient (scatter-add by id).

    Written with ``setup_context`` and out-of-place ops, so a second-order backward can
    differentiate through it, and with its own :meth:`vmap` rule for seed stacking
    (:mod:`mtlrec.training.stacked`)."""

    @staticmethod
    def vmap(info, in_dims, weight: Tensor, ids: Tensor):
        """K stacked tables ``[K, V, D]``: one lookup into the ``[K·V, D]`` table they form, with
        seed k's ids offset by k·V, so the backward is one ``index_add`` for all seeds. Without
        it, inside vmap the lookup fell back to ``F.embedding`` (``requires_grad`` reads False
        there), whose batched dense backward took 131 ms per forward and backward with K = 10,
        a 510 × 4 table and 4,096 × 31 ids; with it, 45 ms. Ids must be in ``[0, V)`` (as the
        encoders give them): an id past V would read the next seed's row."""
        weight_dim, ids_dim = in_dims
        size = info.batch_size
        ids = ids.movedim(ids_dim, 0) if ids_dim is not None else ids.expand(size, *ids.shape)
        if weight_dim is None:  # one table for all: the batch is only more ids
            return _IndexAddLookup.apply(weight, ids), 0
        weight = weight.movedim(weight_dim, 0)
        rows = weight.shape[1]
        offsets = torch.arange(size, device=ids.device).mul_(rows).view(size, *([1] * (ids.dim() - 1)))
        return lookup(weight.flatten(0, 1), ids + offsets), 0  # (F.embedding past INDEX_ADD_LIMIT)

    @staticmethod
    def forward(weight: Tensor, ids: Tensor) -> Tensor:
        return F.embedding(ids, weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, ids = inputs
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        width = grad.shape[-1]
        weight_grad = grad.new_zeros(ctx.rows, width).index_add(0, ids.reshape(-1), grad.reshape(-1, width))
        return weight_grad, None


def lookup(weight: Tensor, ids: Tensor) -> Tensor:
    """``F.embedding(ids, weight)``: ids ``[...]`` → ``[..., D]``. On CPU its backward is the
    faster ``index_add`` (see the module docstring). Elsewhere it is ``F.embedding``."""
    # (not ``weight.requires_grad``: inside vmap, as in seed stacking, it reads False)
    fast = weight.device.type == "cpu" and weight.numel() <= INDEX_ADD_LIMIT
    if not fast or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return F.embedding(ids, weight)
    return _IndexAddLookup.apply(weight, ids)
