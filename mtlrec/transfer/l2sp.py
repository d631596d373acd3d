"""L2-SP (Li, Grandvalet & Davoine, ICML 2018): regularise toward the source, not toward zero.

    Ω(w) = α/2 · ‖w_S − w⁰_S‖²  +  β/2 · ‖w_N‖²                                   (paper, eq. 3)

``w_S`` are the weights ``init_from`` transferred (for a remapped embedding table: the rows of the
categories the source knew), ``w⁰`` their values right after the transfer, ``w_N`` the newly
initialised ones. Ω replaces plain weight decay on those parameters (their optimizer group gets
``weight_decay=0``). Its gradient, α(w_S − w⁰_S) and βw_N, is added to ``.grad`` after the
weighting's backward: no autograd graph, and the same for every weighting, since it is a prior on
the weights, not a task loss. ``w⁰`` is kept as buffers, so a resumed run pulls toward the source
weights, not toward the weights it was resumed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


class L2SP(nn.Module):
    """Ω over the architecture's parameters, from an ``init_from`` report (see the module)."""

    def __init__(self, architecture: nn.Module, report: Mapping[str, Any], alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        if not alpha >= 0 or not beta >= 0:
            raise ValueError(f"finetune.l2sp: alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        named = dict(architecture.named_parameters())
        prefix = "architecture."
        transferred = {n[len(prefix):]: None for n in report.get("loaded", []) if n.startswith(prefix)}
        transferred.update({n[len(prefix):]: rows for n, rows in report.get("remapped_rows", {}).items()
                            if n.startswith(prefix)})
        self.names = [n for n, p in named.items() if p.requires_grad]
        self._params = [named[n] for n in self.names]
        for i, name in enumerate(self.names):
            param = named[name]
            mask = torch.zeros_like(param, dtype=torch.bool)
            if name in transferred:
                rows = transferred[name]
                if rows is None:
                    mask[...] = True
                else:
                    mask[torch.as_tensor(rows, dtype=torch.long)] = True
            self.register_buffer(f"reference_{i}", param.detach().clone())
            self.register_buffer(f"transferred_{i}", mask)

    def _terms(self):
        for i, param in enumerate(self._params):
            yield param, getattr(self, f"reference_{i}"), getattr(self, f"transferred_{i}")

    def penalty(self) -> Tensor:
        """Ω(w) itself (for logging and tests)."""
        total = torch.zeros(())
        for param, reference, transferred in self._terms():
            total = total + self.alpha / 2 * ((param - reference)[transferred] ** 2).sum()
            total = total + self.beta / 2 * (param[~transferred] ** 2).sum()
        return total

    @torch.no_grad()
    def add_gradient(self) -> None:
        """``.grad += ∂Ω/∂w`` on every parameter under Ω."""
        for param, reference, transferred in self._terms():
            grad = torch.where(transferred, self.alpha * (param - reference), self.beta * param)
            param.grad = grad if param.grad is None else param.grad + grad

    def parameter_ids(self) -> set[int]:
        return {id(p) for p in self._params}
