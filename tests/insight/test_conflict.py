"""Task-gradient conflict: the cosine and norms equal a direct computation on two tiny losses; a
real run samples it every k steps on the parameters above the encoder, changes nothing it trains,
and stores it in results.json; tasks that share nothing have none."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrec.insight.conflict import GradientConflict, conflict, conflict_parameters, task_gradients
from tests.conftest import build_in_process, train_in_process

FAST = ["data.num_train=600", "data.num_val=200", "data.num_test=200", "data.loader.batch_size=100",
        "console.progress_bar=false"]


def test_the_cosine_and_norms_equal_a_direct_computation() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    b = nn.Parameter(torch.tensor(0.5))
    losses = {"a": (w * torch.tensor([3.0, -1.0])).sum() + b, "b": (w ** 2).sum() - 2 * b}
    # ∂a/∂(w, b) = (3, -1, 1); ∂b/∂(w, b) = (2, 4, -2)
    ga, gb = torch.tensor([3.0, -1.0, 1.0]), torch.tensor([2.0, 4.0, -2.0])
    gradients = task_gradients(losses, [w, b])
    assert torch.equal(gradients, torch.stack([ga, gb]))
    cosine, norms = conflict(gradients)
    assert cosine[0, 1] == pytest.approx(float(ga @ gb / (ga.norm() * gb.norm())))  # 0: neither helps nor hurts
    assert cosine[0, 0] == pytest.approx(1.0) and torch.allclose(cosine, cosine.T)
    assert torch.allclose(norms, torch.stack([ga.norm(), gb.norm()]))
    opposed = conflict(torch.stack([ga, -2 * ga]))[0]
    assert opposed[0, 1] == pytest.approx(-1.0)
    # a parameter one loss does not reach gets a zero gradient, not an error
    c = nn.Parameter(torch.tensor(1.0))
    assert torch.equal(task_gradients({"a": w.sum(), "b": c * 2}, [w, c]), torch.tensor([[1.0, 1.0, 0.0],
                                                                                       [0.0, 0.0, 2.0]]))


def test_the_monitor_samples_every_k_steps_and_summarises_the_pairs() -> None:
    w = nn.Parameter(torch.tensor([1.0, 0.0]))
    monitor = GradientConflict(["a", "b"], [w], every=2)
    for step in range(5):
        if monitor.due(step):
            monitor.measure(step, {"a": w[0] * 1.0, "b": -w[0] * (step + 1.0)})
    monitor.flush()
    assert [h["step"] for h in monitor.history] == [0, 2, 4]
    summary = monitor.summary()
    assert summary["pairs"]["a~b"] == {"mean_cosine": -1.0, "share_negative": 1.0, "samples": 3}
    assert summary["parameters"] == "above_encoder" and summary["num_parameters"] == 2
    assert [h["norm"] for h in monitor.history] == [[1.0, 1.0], [1.0, 3.0], [1.0, 5.0]]
    assert not GradientConflict(["a", "b"], [w], every=0).due(0)
    with pytest.raises(ValueError, match="insight.conflict_every=-1"):
        GradientConflict(["a"], [w], every=-1)


def test_the_shared_parameters_above_the_encoder_are_measured() -> None:
    module, _ = build_in_process(["arch=mmoe", *FAST])
    measured = {id(p) for p in module.conflict.params}
    experts = {id(p) for p in module.architecture.experts.parameters()}
    encoder = {id(p) for p in module.architecture.encoder.parameters()}
    assert measured == experts and not measured & encoder
    assert module.conflict.where == "above_encoder"
    shared = [nn.Parameter(torch.zeros(1))]
    assert conflict_parameters(shared, shared) == (shared, "encoder")  # nothing above the encoder: the encoder's


def test_a_run_samples_conflict_without_changing_what_it_trains(tmp_path) -> None:
    on, _ = train_in_process(tmp_path / "on", ["arch=mmoe", "trainer.max_epochs=2", "insight.conflict_every=3", *FAST])
    off, _ = train_in_process(tmp_path / "off", ["arch=mmoe", "trainer.max_epochs=2", *FAST])
    steps = [s["step"] for s in on["conflict"]["samples"]]
    assert steps == [0, 3, 6, 9]  # 6 steps per epoch, 2 epochs
    assert off["conflict"] is None
    assert on["metrics"]["test"] == off["metrics"]["test"]  # measuring does not move the model
    ((name, pair),) = on["conflict"]["pairs"].items()
    assert -1 <= pair["mean_cosine"] <= 1 and pair["samples"] == 4
    # the logger gets each epoch's mean (results.json keeps every sample)
    import pandas as pd

    logged = pd.read_csv(tmp_path / "on" / "logs" / "metrics.csv")[f"conflict/{name}"].dropna()
    cos = [s["cosine"][0][1] for s in on["conflict"]["samples"]]
    assert logged.tolist() == pytest.approx([sum(cos[:2]) / 2, sum(cos[2:]) / 2], abs=1e-5)


def test_the_first_sample_of_a_run_equals_a_direct_computation_on_its_first_batch(tmp_path) -> None:
    """Step 0: the model is still its seeded initialisation and the batch the sampler's first."""
    from mtlrec.data.table import IndexBatchSampler

    overrides = ["arch=mmoe", "trainer.max_epochs=1", "insight.conflict_every=4", *FAST]
    record, _ = train_in_process(tmp_path / "run", overrides)
    module, dm = build_in_process(overrides)
    train = dm.tables["train"]
    first = next(iter(IndexBatchSampler(len(train), dm.batch_size, shuffle=True, seed=0)))
    batch = train[first]
    losses = module.task_losses(module(batch), batch)
    cosine, norms = conflict(task_gradients({t: losses[t] for t in module.conflict.tasks}, module.conflict.params))
    sample = record["conflict"]["samples"][0]
    assert sample["step"] == 0
    assert sample["cosine"][0][1] == pytest.approx(float(cosine[0, 1]), abs=1e-5)
    assert sample["norm"] == pytest.approx([float(v) for v in norms], rel=1e-4)


def test_a_task_without_gradient_has_no_cosine() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    cosine, norms = conflict(task_gradients({"a": w.sum(), "b": w.sum() * 0.0}, [w]))
    assert norms[1] == 0 and torch.isnan(cosine[0, 1]) and torch.isnan(cosine[1, 1])
    monitor = GradientConflict(["a", "b"], [w], every=1)
    monitor.measure(0, {"a": w.sum(), "b": w.sum() * 0.0})
    monitor.measure(1, {"a": w.sum(), "b": -w.sum()})
    monitor.flush()
    assert monitor.history[0]["cosine"][0][1] is None
    assert monitor.summary()["pairs"]["a~b"] == {"mean_cosine": -1.0, "share_negative": 1.0, "samples": 1}


def test_tasks_that_share_nothing_have_no_conflict(tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", ["arch=single_task", "trainer.max_epochs=1",
                                                    "insight.conflict_every=1", *FAST])
    assert record["conflict"] is None


def test_more_than_two_tasks_get_a_pairwise_matrix(tmp_path) -> None:
    from mtlrec.insight.cli import conflict_section, render

    def run(name, sign):
        samples = [{"step": s, "cosine": [[1, 0.5, sign * 0.2], [0.5, 1, -0.4], [sign * 0.2, -0.4, 1]],
                    "norm": [1, 1, 2]} for s in (0, 10)]
        pairs = {"a~b": {"mean_cosine": 0.5, "share_negative": 0.0}, "a~c": {"mean_cosine": sign * 0.2,
                                                                            "share_negative": float(sign < 0)},
                 "b~c": {"mean_cosine": -0.4, "share_negative": 1.0}}
        return {"name": name, "model": "MMoE", "tasks": ["a", "b", "c"], "relations": [], "test": {},
                "metric_names": dict.fromkeys("abc", "auc"), "modes": dict.fromkeys("abc", "max"),
                "gates": None, "experts": None,
                "conflict": {"every": 10, "tasks": ["a", "b", "c"], "pairs": pairs, "samples": samples}}

    runs = [run("s0", 1), run("s1", -1)]
    text, found = conflict_section("MMoE", runs)
    assert "| b~c | -0.400 ± 0.000 (2) | 1.000 ± 0.000 (2) | 0.50 ± 0.00 (2) | 2 |" in text
    assert "| a~c | 0.000 ± 0.283 (2) |" in text
    assert found["matrix"][0][2] == pytest.approx(0.0) and found["matrix"][1][2] == pytest.approx(-0.4)
    render(runs, tmp_path)
    assert (tmp_path / "conflict_matrix_MMoE.png").exists() and (tmp_path / "conflict_MMoE.png").exists()
