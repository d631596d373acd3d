"""Gate utilisation against hand computations, the expert-collapse check on identical and distinct
experts, and the per-epoch statistics a real MMoE run stores in results.json."""

from __future__ import annotations

import math

import pytest
import torch

from mtlrec.insight.gates import GateStatistics, collapsed_pairs, expert_similarity
from tests.conftest import train_in_process


def test_gate_statistics_equal_the_hand_computation() -> None:
    stats = GateStatistics()
    stats.update({"click": torch.tensor([[0.5, 0.5], [1.0, 0.0]])})
    stats.update({"click": torch.tensor([[0.0, 1.0], [0.5, 0.5]])})  # accumulates across batches
    got = stats.compute()["click"]
    assert got["mean"] == pytest.approx([0.5, 0.5])
    # expert 0 got 0.5, 1, 0, 0.5: variance 0.125
    assert got["std"] == pytest.approx([math.sqrt(0.125)] * 2, abs=1e-6)
    assert got["entropy"] == pytest.approx(math.log(2) / 2, abs=1e-6)  # two rows at log 2, two at 0
    assert got["entropy_share"] == pytest.approx(0.5, abs=1e-6)
    stats.reset()
    assert stats.compute() == {}


def test_the_collapse_check_flags_identical_experts_and_passes_distinct_ones() -> None:
    torch.manual_seed(0)
    one = torch.randn(64, 1, 8)
    same = torch.cat([one, one, torch.randn(64, 1, 8)], dim=1)  # experts 0 and 1 identical
    assert collapsed_pairs(expert_similarity(same)) == [(0, 1)]
    assert collapsed_pairs(expert_similarity(torch.randn(64, 4, 8))) == []


def test_an_mmoe_run_stores_gate_utilisation_per_epoch(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=mmoe", "trainer.max_epochs=2", "data.num_train=600",
                                                    "data.num_val=200", "data.num_test=200",
                                                    "console.progress_bar=false"])
    epochs = record["gates"]["per_epoch"]
    assert len(epochs) == record["epochs_trained"] == 2  # no sanity-check or post-fit entry
    experts = record["config"]["arch"]["num_experts"]
    for gate in epochs[-1].values():
        assert len(gate["mean"]) == experts and sum(gate["mean"]) == pytest.approx(1.0, abs=1e-4)
        assert 0 <= gate["entropy_share"] <= 1


def test_an_architecture_without_gates_stores_none(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=shared_bottom", "trainer.max_epochs=1",
                                                    "data.num_train=400", "console.progress_bar=false"])
    assert record["gates"] is None
