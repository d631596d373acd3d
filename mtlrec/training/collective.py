"""Means over the processes of a data-parallel run, for the parts of a step that DDP's gradient
all-reduce does not cover.

DDP averages the gradients that go through the trainer's backward. A weighting that sets gradients
itself (GradNorm's last shared layer, an aggregator's shared parameters) needs more: the quantities
its update *depends on* (per-task losses, per-task gradients on W, the Jacobian's rows) must be the
global ones before it decides anything, so that every process takes the same decision and the
replicas stay identical. With equal shares of every global batch (``IndexBatchSampler``), the mean
over the processes of each share's mean loss (or gradient) is the global batch's — the same
quantity DDP averages for the fixed weighting.

Each call is one ``all_reduce`` over the tensors concatenated (not one per tensor, and not
Lightning's ``strategy.reduce``, which adds a barrier per call).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_processes(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The element-wise mean of each tensor over the processes (new tensors; the inputs are left
    alone). One process: the tensors themselves."""
    world = world_size()
    if world == 1 or not tensors:
        return list(tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return out


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace each trainable parameter's ``.grad`` by its mean over the processes (a parameter
    without a gradient on this process counts as a zero gradient, so every process sends the same
    layout)."""
    params = [p for p in parameters if p.requires_grad]
    if world_size() == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for param, mean in zip(params, mean_over_processes(grads), strict=True):
        param.grad = mean
