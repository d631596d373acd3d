"""Per-task feature importance by permutation (Breiman 2001; Fisher, Rudin & Dominici 2019's
"model reliance"), on a finished run's best checkpoint.

For each field group (one input column by default: a multi-hot tag list, a text or an image
column is one column, so its tokens or pixels move together; ``groups`` joins several), the
group's values are shuffled across the rows of a split with one permutation, the rows are
transformed again with the run's *fitted* preprocessing (only the transformers that read the
group), and each task is scored on its own sample space. The importance of a group for a task is

    Δmetric = metric(original) − metric(permuted)   (for a metric to maximise; the reverse for one to minimise)
    Δloss   = loss(permuted) − loss(original)

averaged over ``repeats`` permutations (mean ± std). A group the model cannot see scores 0
exactly; one the labels are made of scores high. It measures what *this model* relies on, not
what is causally relevant, and correlated inputs share their importance (permuting one leaves the
other), so a low score does not prove a column useless.

Labels are never features (the schema keeps them apart), so nothing here permutes a label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.table import TensorTable


@torch.no_grad()
def predict_logits(architecture, table: TensorTable, batch_size: int = 16384) -> dict[str, Tensor]:
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(table), batch_size):
        logits = architecture(table[slice(start, start + batch_size)]).logits
        for task, value in logits.items():
            parts.setdefault(task, []).append(value)
    return {t: torch.cat(v) for t, v in parts.items()}


def score(objectives: Mapping[str, Any], logits: Mapping[str, Tensor], table: TensorTable) -> dict[str, dict]:
    """Per task, on its sample space: the selection metric and the mean loss."""
    out = {}
    for task, objective in objectives.items():
        mask = table.masks.get(task)
        pred, target = logits[task], table.labels[task]
        if mask is not None:
            pred, target = pred[mask], target[mask]
        if not len(target):
            continue
        metrics = objective.metrics()
        objective.update(metrics, pred, target)
        name, mode = objective.selection
        out[task] = {"metric": name, "mode": mode, "value": float(objective.compute(metrics)[name]),
                     "loss": float(objective.loss(pred, target))}
    return out


def default_groups(schema) -> dict[str, list[str]]:
    return {f.name: [f.name] for f in schema.features}


def check_groups(groups: Mapping[str, Sequence[str]], schema) -> dict[str, list[str]]:
    """``groups`` with every column an input of the run; a column in no group keeps its own."""
    inputs = [f.name for f in schema.features]
    unknown = sorted({c for cols in groups.values() for c in cols} - set(inputs))
    if unknown:
        raise ValueError(f"--group: {unknown} are not inputs of this run; its inputs are {inputs}")
    listed = [c for cols in groups.values() for c in cols]
    twice = sorted({c for c in listed if listed.count(c) > 1})
    if twice:
        raise ValueError(f"--group: {twice} are in more than one group; put each input in one group")
    clash = sorted(name for name, cols in groups.items() if name in inputs and list(cols) != [name])
    if clash:
        raise ValueError(f"--group: the group name(s) {clash} are also inputs of this run; name the group otherwise")
    grouped = set(listed)
    return {**{name: list(cols) for name, cols in groups.items()}, **{c: [c] for c in inputs if c not in grouped}}


def permutation_importance(architecture, preprocessor, objectives: Mapping[str, Any], frame: pd.DataFrame,
                           groups: Mapping[str, Sequence[str]], repeats: int = 5, seed: int = 0,
                           split: str = "val") -> dict[str, Any]:
    """``{"baseline": score(...), "importance": {group: {task: {"metric": [per repeat], "loss": [...]}}}}``."""
    if repeats < 1:
        raise ValueError(f"--repeats={repeats}: give at least 1")
    frame = frame.reset_index(drop=True)
    table = preprocessor.transform(frame, split=split)
    base = score(objectives, predict_logits(architecture, table), table)
    readers = {name: [key for key, t in preprocessor.transformers.items() if set(t.columns) & set(cols)]
               for name, cols in groups.items()}
    rng = np.random.default_rng(seed)
    importance: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, cols in groups.items():
        per_task: dict[str, dict[str, list[float]]] = {t: {"metric": [], "loss": []} for t in base}
        for _ in range(repeats):
            order = rng.permutation(len(frame))
            permuted = frame.copy(deep=False)
            for col in cols:
                permuted[col] = frame[col].to_numpy()[order]
            features = dict(table.features)
            for key in readers[name]:
                features[key] = preprocessor.transformers[key].transform(permuted, split)
            shuffled = TensorTable(features, table.labels, table.masks, num_rows=len(table), domain=table.domain)
            after = score(objectives, predict_logits(architecture, shuffled), shuffled)
            for task, b in base.items():
                sign = 1.0 if b["mode"] == "max" else -1.0
                per_task[task]["metric"].append(sign * (b["value"] - after[task]["value"]))
                per_task[task]["loss"].append(after[task]["loss"] - b["loss"])
        importance[name] = per_task
    return {"split": split, "rows": len(frame), "repeats": repeats, "seed": seed, "baseline": base,
            "groups": {name: list(cols) for name, cols in groups.items()}, "importance": importance}


def summarise(result: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """group -> task -> {metric_mean, metric_std, loss_mean, loss_std}."""
    out = {}
    for name, tasks in result["importance"].items():
        out[name] = {}
        for task, values in tasks.items():
            m, lo = np.asarray(values["metric"]), np.asarray(values["loss"])
            spread = (lambda x: float(x.std(ddof=1)) if len(x) > 1 else 0.0)  # noqa: E731
            out[name][task] = {"metric_mean": float(m.mean()), "metric_std": spread(m),
                               "loss_mean": float(lo.mean()), "loss_std": spread(lo)}
    return out


def specificity(summary: Mapping[str, Mapping[str, Mapping[str, float]]], tasks: Sequence[str],
                share: float = 0.05) -> dict[str, str]:
    """group -> ``shared`` (it matters to every task), a task's name (to that task only),
    ``several`` or ``none``. It *matters* to a task when its mean Δmetric exceeds both twice its
    std over repeats and ``share`` of that task's largest Δmetric."""
    top = {t: max((summary[g][t]["metric_mean"] for g in summary), default=0.0) for t in tasks}
    out = {}
    for group, per_task in summary.items():
        matters = [t for t in tasks if per_task[t]["metric_mean"] > max(2 * per_task[t]["metric_std"],
                                                                       share * top[t], 0.0)]
        out[group] = ("shared" if len(matters) == len(tasks) and len(tasks) > 1 else
                      matters[0] if len(matters) == 1 else "several" if matters else "none")
    return out
