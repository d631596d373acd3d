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

    Written with ``setup_context`` and out-of-place ops, so ``vmap`` (seed stacking,
    :mod:`mtlrec.training.stacked`) derives its batching rule, and a second-order backward can
    differentiate through it."""

    generate_vmap_rule = True

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
    fast = weight.device.type == "cpu" and weight.numel() <= INDEX_ADD_LIMIT and weight.requires_grad
    if not fast or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return F.embedding(ids, weight)
    return _IndexAddLookup.apply(weight, ids)
