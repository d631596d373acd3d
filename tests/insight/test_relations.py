"""Task relations against numpy: label and prediction correlation on the rows both tasks label
(a masked task's sample space respected), and the gain over single-task with its sign for a metric
to minimise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec
from mtlrec.data.table import TensorTable
from mtlrec.insight.relations import gain_over_single_task, task_relations
from mtlrec.training.objectives import objective_for


def test_correlations_equal_numpy_on_the_rows_of_both_sample_spaces() -> None:
    schema = Schema([FeatureSpec("x", "numeric")],
                    [TaskSpec("click", "binary", "click"), TaskSpec("buy", "binary", "buy", mask="click"),
                     TaskSpec("rating", "multiclass", "rating", classes=("1", "2", "3"))], "click")
    rng = np.random.default_rng(0)
    n = 400
    click = rng.integers(0, 2, n).astype(np.float32)
    buy = (click * rng.integers(0, 2, n)).astype(np.float32)
    shared = rng.normal(size=n)
    logits = {"click": torch.tensor(shared + rng.normal(size=n), dtype=torch.float32),
              "buy": torch.tensor(shared + rng.normal(size=n), dtype=torch.float32),
              "rating": torch.zeros(n, 3)}
    mask = torch.tensor(click == 1)
    table = TensorTable({"numeric": torch.zeros(n, 1)}, {"click": torch.tensor(click), "buy": torch.tensor(buy),
                                                         "rating": torch.zeros(n, dtype=torch.long)},
                        {"buy": mask})
    objectives = {t.name: objective_for(t) for t in schema.tasks}
    (row,) = task_relations(schema, objectives, logits, table)  # the multiclass task is in no pair
    inside = click == 1
    assert row["pair"] == "click~buy" and row["rows"] == int(inside.sum())
    assert row["label_correlation"] is None  # click is constant (1) on buy's sample space
    sigmoid = lambda v: 1 / (1 + np.exp(-v.numpy().astype(np.float64)))  # noqa: E731
    expected = np.corrcoef(sigmoid(logits["click"])[inside], sigmoid(logits["buy"])[inside])[0, 1]
    assert row["prediction_correlation"] == pytest.approx(expected, abs=1e-6) and expected > 0.3


def test_gain_over_single_task_is_signed_so_that_positive_is_better() -> None:
    means = {"SingleTask": {"ctr": 0.80, "price": 2.0}, "MMoE": {"ctr": 0.84, "price": 1.5}}
    gains = gain_over_single_task(means, {"ctr": "max", "price": "min"})
    assert gains == {"MMoE": {"ctr": pytest.approx(0.05), "price": pytest.approx(0.25)}}
    assert gain_over_single_task({"MMoE": {"ctr": 0.8}}, {"ctr": "max"}) == {}  # no single-task runs
