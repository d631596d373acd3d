"""Gate utilisation against hand computations, the expert-collapse check on identical and distinct
experts, and the per-epoch statistics a real MMoE run stores in results.json."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlrec.insight.gates import GateStatistics, collapsed_pairs, expert_similarity
from tests.conftest import build_in_process, train_in_process


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
    assert [e["epoch"] for e in epochs] == [1, 2]  # 1-based, as best_epoch
    experts = record["config"]["arch"]["num_experts"]
    for gate in epochs[-1]["gates"].values():
        assert len(gate["mean"]) == experts and sum(gate["mean"]) == pytest.approx(1.0, abs=1e-4)
        assert 0 <= gate["entropy_share"] <= 1
    # the collapse check of the one expert layer: E × E, ones on the diagonal, randomly initialised
    # experts far from identical
    (layer,) = epochs[-1]["experts"].values()
    similarity = torch.tensor(layer["similarity"])
    assert similarity.shape == (experts, experts) and torch.allclose(similarity.diagonal(), torch.ones(experts))
    assert layer["collapsed"] == [] and layer["max_similarity"] < 0.99


def test_identical_experts_are_flagged_in_a_real_validation_pass(tmp_path) -> None:
    """PaddleRec#721's failure: constant initialisation leaves every expert the same."""
    from mtlrec.insight.gates import ExpertCapture

    module, dm = build_in_process(["arch=mmoe", "arch.num_experts=3", "data.num_train=200"])
    with torch.no_grad():
        for tensor in (*module.architecture.experts.weights, *module.architecture.experts.biases):
            tensor.copy_(tensor[:1].expand_as(tensor))  # expert 0's weights everywhere
    capture = ExpertCapture(module.architecture)
    batch = dm.tables["val"][torch.arange(64)]
    module.architecture(batch)
    module.architecture(dm.tables["val"][torch.arange(64, 128)])  # later batches are not kept
    (report,) = capture.report().values()
    assert report["collapsed"] == [[0, 1], [0, 2], [1, 2]] and report["max_similarity"] == pytest.approx(1.0)
    assert not capture._hooks


def test_ple_names_the_experts_each_gate_is_over(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=ple", "arch.num_levels=2", "arch.specific_experts=2",
                                                    "arch.shared_experts=2",
                                                    "trainer.max_epochs=1",
                                                    "data.num_train=400", "console.progress_bar=false"])
    labels = record["gates"]["experts_of"]
    gates = record["gates"]["per_epoch"][-1]["gates"]
    assert set(labels) == set(gates)
    for name, stats in gates.items():
        assert len(labels[name]) == len(stats["mean"]), name
    first = next(n for n in labels if n.startswith("level1/") and n != "level1/shared")
    task = first.split("/", 1)[1]
    assert labels[first] == [f"level1/{task}/0", f"level1/{task}/1", "level1/shared/0", "level1/shared/1"]
    assert len(labels["level0/shared"]) == 2 * len([n for n in labels if n.startswith("level0/")
                                                    and n != "level0/shared"]) + 2


def test_an_architecture_without_gates_stores_none(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=shared_bottom", "trainer.max_epochs=1",
                                                    "data.num_train=400", "console.progress_bar=false"])
    assert record["gates"] is None


def test_the_heatmap_keeps_each_level_apart_and_reads_the_best_epoch(tmp_path) -> None:
    from mtlrec.insight.gates import best_entry, utilisation

    record, _ = train_in_process(tmp_path / "run", ["arch=ple", "arch.num_levels=2", "arch.specific_experts=1",
                                                    "arch.shared_experts=1", "trainer.max_epochs=3",
                                                    "data.num_train=400", "console.progress_bar=false"])
    names, experts, matrix = utilisation(record)
    tasks = [n.split("/", 1)[1] for n in names if n.startswith("level0/") and n != "level0/shared"]
    # the widest gate's order first (level 0's shared gate), then the others' in gate order
    assert experts == [*(f"level0/{t}/0" for t in tasks), "level0/shared/0", f"level1/{tasks[0]}/0",
                       "level1/shared/0", f"level1/{tasks[1]}/0"]
    # a level-1 gate sees nothing of level 0; a task gate nothing of the other task's experts
    row = names.index(f"level1/{tasks[0]}")
    assert np.isnan(matrix[row, : len(tasks) + 1]).all()
    assert np.isnan(matrix[row, experts.index(f"level1/{tasks[1]}/0")])
    assert np.nansum(matrix[row]) == pytest.approx(1.0, abs=1e-4)
    # the entry of the best epoch, not the last
    entries = record["gates"]["per_epoch"]
    for best in (1, 2, 3):
        assert best_entry({**record, "best_epoch": best}) is entries[best - 1]
    assert best_entry({**record, "best_epoch": 9}) is None


def test_dead_experts_are_reported_and_count_as_collapsed() -> None:
    from mtlrec.insight.gates import expert_report

    torch.manual_seed(0)
    outputs = torch.relu(torch.randn(128, 4, 8))
    outputs[:, 1] = 0.0  # two dead ReLU experts: the same (zero) output for every row
    outputs[:, 3] = 0.5
    report = expert_report(outputs)
    assert report["dead"] == [1, 3] and report["collapsed"] == [[1, 3]]
    assert report["similarity"][0][1] == 0.0 and report["similarity"][1][1] == 1.0


def test_models_without_gates_store_no_gate_record_even_with_expert_layers(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=cross_stitch", "trainer.max_epochs=1",
                                                    "data.num_train=400", "console.progress_bar=false"])
    assert record["gates"] is None
