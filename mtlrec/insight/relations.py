"""How the tasks relate, read off the data and off a model's outputs.

Per task pair, on the rows in both tasks' sample spaces: the Pearson correlation of their labels
(how related the tasks are in the data; the MMoE paper's synthetic tasks are controlled by it)
and of the model's predictions (how related the model made them: a shared-bottom model tends to
correlate its outputs more than the labels are, a model with separate experts less). Tasks with
one number per row are compared (binary: the label and the probability; scalar regression: the
value); multiclass and multilabel tasks are left out of the pairs.

The third part of "how the tasks relate", each model's gain over single-task training per task,
comes from the runs' test metrics (:func:`gain_over_single_task`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

SCALAR_KINDS = ("binary", "regression")


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def task_relations(schema, objectives: Mapping[str, Any], logits: Mapping[str, Tensor], table) -> list[dict]:
    tasks = [t for t in schema.tasks if t.kind in SCALAR_KINDS and t.logit_dim == 1 and t.name in logits]
    rows = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            both = torch.ones(len(table), dtype=torch.bool)
            for task in (a, b):
                if task.name in table.masks:
                    both &= table.masks[task.name]
            label = [table.labels[t.name][both].double().numpy() for t in (a, b)]
            pred = [objectives[t.name].predict(logits[t.name][both]).double().numpy() for t in (a, b)]
            rows.append({"pair": f"{a.name}~{b.name}", "rows": int(both.sum()),
                         "label_correlation": _pearson(*label), "prediction_correlation": _pearson(*pred)})
    return rows


def gain_over_single_task(means: Mapping[str, Mapping[str, float]], modes: Mapping[str, str],
                          baseline: str = "SingleTask") -> dict[str, dict[str, float]]:
    """``means[arch][task]``: a test metric's mean over seeds; ``modes[task]``: max or min.
    -> arch -> task -> relative gain over ``baseline`` (``(m − m_st)/|m_st|``, signed so that
    positive is better)."""
    if baseline not in means:
        return {}
    out = {}
    for arch, per_task in means.items():
        if arch == baseline:
            continue
        out[arch] = {}
        for task, value in per_task.items():
            ref = means[baseline].get(task)
            if ref is None or ref == 0:
                continue
            sign = 1.0 if modes.get(task, "max") == "max" else -1.0
            out[arch][task] = sign * (value - ref) / abs(ref)
    return out


def mean_by(values: Sequence[tuple[str, float | None]]) -> dict[str, tuple[float, float, int]]:
    """key -> (mean, std, n) of the non-missing values."""
    grouped: dict[str, list[float]] = {}
    for key, value in values:
        if value is not None:
            grouped.setdefault(key, []).append(value)
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in grouped.items()}
