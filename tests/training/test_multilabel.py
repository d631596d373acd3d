"""Multi-label tasks: one sigmoid per tag; the loss, and micro / macro / per-tag AUC against hand
computations (the Mann-Whitney form of the AUC, ties counted half)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mtlrec.data.schema import TaskSpec
from mtlrec.training.objectives import objective_for

TAGS = ("knits", "dresses", "sale")


def hand_auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.fixture
def batch():
    torch.manual_seed(3)
    logits = torch.randn(40, 3)
    target = (torch.rand(40, 3) < torch.tensor([0.5, 0.3, 0.1])).float()
    target[0, 2] = target[1, 2] = 1.0  # every tag has positives and negatives
    target[2, 2] = 0.0
    logits[5, 1] = logits[6, 1]  # a tie
    return logits, target


def _computed(batch, chunks: int = 3) -> dict[str, float]:
    obj = objective_for(TaskSpec("tags", "multilabel", "tags", classes=TAGS))
    metrics = obj.metrics()
    logits, target = batch
    for lg, y in zip(logits.chunk(chunks), target.chunk(chunks)):  # several batches, as in validation
        obj.update(metrics, lg, y)
    return {k: float(v) for k, v in obj.compute(metrics).items()}


def test_auc_per_tag_macro_and_micro_equal_hand_computations(batch) -> None:
    logits, target = batch
    probs = torch.sigmoid(logits)
    per_tag = [hand_auc(probs[:, j].tolist(), target[:, j].int().tolist()) for j in range(3)]
    micro = hand_auc(probs.flatten().tolist(), target.flatten().int().tolist())
    got = _computed(batch)
    for tag, expected in zip(TAGS, per_tag):
        assert got[f"auc/{tag}"] == pytest.approx(expected, abs=1e-6)
    assert got["auc_macro"] == pytest.approx(sum(per_tag) / 3, abs=1e-6)
    assert got["auc_micro"] == pytest.approx(micro, abs=1e-6)
    assert got["auc_micro"] != pytest.approx(got["auc_macro"], abs=1e-4)  # the two averages really differ here


def test_loss_is_bce_averaged_over_tags_then_rows(batch) -> None:
    logits, target = batch
    obj = objective_for(TaskSpec("tags", "multilabel", "tags", classes=TAGS))
    by_hand = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(obj.loss(logits, target), by_hand)
    assert _computed(batch)["logloss"] == pytest.approx(float(by_hand), abs=1e-6)
    assert obj.selection == ("auc_macro", "max")
    torch.testing.assert_close(obj.predict(logits), torch.sigmoid(logits))


def test_a_tag_without_positives_is_left_out_of_macro_auc(batch) -> None:
    logits, target = batch
    target = target.clone()
    target[:, 2] = 0.0  # "sale" never happens in this split: its AUC is undefined
    probs = torch.sigmoid(logits)
    per_tag = [hand_auc(probs[:, j].tolist(), target[:, j].int().tolist()) for j in range(2)]
    got = _computed((logits, target))
    assert "auc/sale" not in got
    assert got["auc_macro"] == pytest.approx(sum(per_tag) / 2, abs=1e-6)  # not (a + b + 0) / 3
    assert got["auc_micro"] == pytest.approx(hand_auc(probs.flatten().tolist(), target.flatten().int().tolist()), abs=1e-6)
