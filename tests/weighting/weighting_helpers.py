"""Tiny shared-trunk two-task model and helpers shared by the weighting tests (imported by name;
not a conftest, so it cannot clash with other test folders)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mtlrec.weighting.base import SharedModel

TASKS = ["a", "b"]


class TinyMTL(nn.Module):
    """Linear(4,5) → ReLU → Linear(5,3) (last shared) → one Linear(3,1) head per task."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
        self.heads = nn.ModuleDict({t: nn.Linear(3, 1) for t in TASKS})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.double()

    def shared_model(self) -> SharedModel:
        return SharedModel(
            shared_parameters=list(self.trunk.parameters()),
            last_shared_parameters=[self.trunk[2].weight],
            task_parameters=[p for t in TASKS for p in self.heads[t].parameters()],
        )

    def losses(self, x: torch.Tensor, ys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {t: ((self.heads[t](h).squeeze(-1) - ys[t]) ** 2).mean() for t in TASKS}


def make_batch(seed: int = 1, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    ys = {
        "a": torch.randn(n, generator=g, dtype=torch.float64),
        "b": 10.0 * torch.randn(n, generator=g, dtype=torch.float64),  # a larger-scale task
    }
    return x, ys


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


def reference_grads(model: nn.Module, loss_fn) -> dict[str, torch.Tensor]:
    """Gradients of ``loss_fn(model)`` by plain autograd (no weighting involved)."""
    params = dict(model.named_parameters())
    out = torch.autograd.grad(loss_fn(model), list(params.values()), allow_unused=True)
    return {
        n: (g if g is not None else torch.zeros_like(p))
        for (n, p), g in zip(params.items(), out, strict=True)
    }


class CountingBackward:
    """A ``backward_fn`` that records how often it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, loss: torch.Tensor, **kwargs) -> None:
        self.calls += 1
        loss.backward(**kwargs)


@contextlib.contextmanager
def one_thread():
    """Run a small training loop on one intra-op thread (tiny ops are far slower with several
    threads on a busy machine); restores the previous setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def assert_backward_is_plain_sum(weighting, model, x, ys) -> None:
    """One ``backward`` call fills exactly the gradients of Σ_k L_k (one backward_fn call)."""
    ref = reference_grads(model, lambda m: sum(m.losses(x, ys).values()))
    bw = CountingBackward()
    weighting.backward(model.losses(x, ys), bw)
    assert bw.calls == 1
    for n, g in grads_of(model).items():
        torch.testing.assert_close(g, ref[n])
