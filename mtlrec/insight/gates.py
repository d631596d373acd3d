"""Gate and expert utilisation of mixture-of-experts models (OMoE, MMoE, CGC, PLE: any architecture
that returns gate weights in ``TaskOutputs.gates``).

Per gate (a task's gate, or a PLE level's shared gate) over the validation rows: the mean weight
each expert gets, its spread over samples (std), and the gate's entropy ``H = −Σ_e g_e log g_e``,
averaged over rows, also as a share of its maximum ``log E`` (1: the gate spreads evenly; near 0:
each row goes to one expert). Do the tasks use different experts? Compare their mean-weight rows.

Gate statistics mean nothing when the experts are identical (PaddleRec#721: constant
initialisation left every expert the same, so any gate looked "balanced"): :func:`expert_similarity`
and :func:`collapsed_pairs` flag experts whose outputs on a batch are (near-)identical.

:class:`GateStatistics` accumulates on the device (sums only, no host sync per batch); one
``compute()`` per validation epoch reads them out.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn


class GateStatistics:
    """Running sums of gate weights ``[B, E]`` per gate name."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, list[Tensor]] = {}  # name -> [Σ g, Σ g², Σ H, n]

    def update(self, gates: dict[str, Tensor]) -> None:
        for name, g in gates.items():
            g = g.detach().float()
            entropy = -(g * g.clamp_min(1e-12).log()).sum(-1)
            parts = [g.sum(0), g.pow(2).sum(0), entropy.sum(), g.new_tensor(float(g.shape[0]))]
            if name in self.sums:
                self.sums[name] = [a + b for a, b in zip(self.sums[name], parts)]
            else:
                self.sums[name] = parts

    def compute(self) -> dict[str, dict[str, list[float] | float]]:
        out = {}
        for name, (total, squares, entropy, n) in self.sums.items():
            mean = total / n
            std = (squares / n - mean.pow(2)).clamp_min(0).sqrt()
            h = float(entropy / n)
            out[name] = {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
                         "entropy": round(h, 6), "entropy_share": round(h / math.log(len(mean)), 6)
                         if len(mean) > 1 else 0.0}
        return out


DEAD = 1e-6  # an expert whose centred output has less norm (per element) than this is constant


def _centred(expert_outputs: Tensor) -> Tensor:
    """``[E, B·U]``: each expert's outputs with each unit's mean over the batch removed."""
    x = expert_outputs.detach().float()
    x = x - x.mean(0, keepdim=True)
    return x.permute(1, 0, 2).reshape(x.shape[1], -1)


def expert_similarity(expert_outputs: Tensor) -> Tensor:
    """``[B, E, U]`` outputs of E experts on one batch -> ``[E, E]`` cosine similarity of each pair's
    *centred* outputs (each unit's mean over the batch removed, then flattened over the batch: a
    Pearson correlation). Centred, because ReLU experts' outputs are all ≥ 0, so their raw cosine
    is high for any two experts (measured: 0.76–0.95 between distinct PLE experts after one
    epoch); identical experts still give 1. Two *constant* experts (dead ReLUs: the same output
    for every row) have nothing left after centring: they count as identical (1), and a constant
    expert against a varying one as unrelated (0)."""
    flat = _centred(expert_outputs)
    dead = dead_experts(expert_outputs)
    similarity = torch.nn.functional.normalize(flat, dim=1) @ torch.nn.functional.normalize(flat, dim=1).T
    both = dead[:, None] & dead[None, :]
    return torch.where(both, torch.ones_like(similarity), similarity)


def dead_experts(expert_outputs: Tensor) -> Tensor:
    """``[E]`` bool: experts whose output does not vary over the batch."""
    flat = _centred(expert_outputs)
    return flat.norm(dim=1) <= DEAD * (flat.shape[1] ** 0.5)


def collapsed_pairs(similarity: Tensor, threshold: float = 0.99) -> list[tuple[int, int]]:
    """Expert pairs whose outputs are near-identical (cosine ≥ ``threshold``)."""
    e = similarity.shape[0]
    return [(i, j) for i in range(e) for j in range(i + 1, e) if float(similarity[i, j]) >= threshold]


def expert_report(expert_outputs: Tensor, threshold: float = 0.99) -> dict:
    """What results.json keeps of one expert layer's outputs on a batch: the similarity matrix, its
    largest off-diagonal value, the collapsed pairs and the constant ("dead") experts."""
    similarity = expert_similarity(expert_outputs)
    e = similarity.shape[0]
    off = [float(similarity[i, j]) for i in range(e) for j in range(i + 1, e)]
    return {"similarity": [[round(float(v), 6) for v in row] for row in similarity.cpu()],
            "max_similarity": round(max(off), 6) if off else None,
            "collapsed": [list(pair) for pair in collapsed_pairs(similarity, threshold)],
            "dead": [int(i) for i in torch.nonzero(dead_experts(expert_outputs)).flatten()]}


class ExpertCapture:
    """Keeps the output ``[B, E, U]`` of every :class:`~mtlrec.models.blocks.experts.ExpertLayer`
    of ``model`` on the first batch it sees, through forward hooks removed right after (no cost on
    the other batches). Any architecture built on expert layers is covered, without asking which."""

    def __init__(self, model: nn.Module):
        from mtlrec.models.blocks.experts import ExpertLayer

        self.outputs: dict[str, Tensor] = {}
        self._hooks = [m.register_forward_hook(self._keep(name)) for name, m in model.named_modules()
                       if isinstance(m, ExpertLayer)]

    def _keep(self, name: str):
        def hook(module, inputs, output) -> None:
            if name not in self.outputs:
                self.outputs[name] = output.detach()
                if len(self.outputs) == len(self._hooks):
                    self.remove()
        return hook

    def remove(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def report(self, threshold: float = 0.99) -> dict[str, dict]:
        self.remove()
        return {name: expert_report(out, threshold) for name, out in self.outputs.items()}



def best_entry(record: dict) -> dict | None:
    """A run's per-epoch gate entry at its best epoch (the weights it was tested with)."""
    gates = record.get("gates")
    if not gates or not gates.get("per_epoch"):
        return None
    entries = gates["per_epoch"]
    best = record.get("best_epoch")
    if best is None:
        return entries[-1]
    return next((e for e in entries if e.get("epoch") == best), None)


def utilisation(record: dict, labels: dict[str, list[str]] | None = None
                ) -> tuple[list[str], list[str], np.ndarray] | None:
    """A run's gate × expert matrix of mean gate weights on validation at its best epoch: (gate
    names, expert labels, matrix with NaN where a gate does not see an expert); ``None`` for a
    run without gates. ``labels``: the architecture's :meth:`gate_expert_labels` (default: the
    ones the run stored)."""
    entry = best_entry(record)
    if entry is None or not entry.get("gates"):
        return None
    stats = entry["gates"]
    labels = labels if labels is not None else record["gates"].get("experts_of") or {}
    names = list(stats)
    of = {n: labels.get(n) or [f"expert {i}" for i in range(len(stats[n]["mean"]))] for n in names}
    # the widest gate first (PLE's shared gate sees every expert of its level), so columns keep its order
    columns = list(dict.fromkeys(label for n in sorted(names, key=lambda n: -len(of[n])) for label in of[n]))
    matrix = np.full((len(names), len(columns)), np.nan)
    for g, name in enumerate(names):
        for label, value in zip(of[name], stats[name]["mean"]):
            matrix[g, columns.index(label)] = value
    return names, columns, matrix
