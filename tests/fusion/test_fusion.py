"""Fusion rules against hand computations, stacking fit on validation only, and ``mtlrec-fuse`` on
two real runs."""

from __future__ import annotations

import json

import pytest
import torch

from mtlrec.fusion import cli as fuse_cli
from mtlrec.fusion import rules
from tests.conftest import train_in_process

P = torch.tensor([[0.9, 0.2, 0.6, 0.4],   # member 0
                  [0.7, 0.4, 0.2, 0.6],   # member 1
                  [0.8, 0.1, 0.7, 0.3]])  # member 2


def test_mean_and_weighted_mean() -> None:
    assert torch.allclose(rules.mean(P), torch.tensor([0.8, 0.7 / 3, 0.5, 1.3 / 3]))
    w = torch.tensor([1.0, 2.0, 1.0])
    assert torch.allclose(rules.weighted(P, w), (P[0] + 2 * P[1] + P[2]) / 4)


def test_rank_averaging_uses_ranks_not_values() -> None:
    # ranks (1 = lowest) per member / N: m0 [4,1,3,2], m1 [4,2,1,3], m2 [4,1,3,2]
    expected = torch.tensor([12, 4, 7, 7]) / 3 / 4
    assert torch.allclose(rules.rank(P, "binary"), expected)
    squashed = P.clone()
    squashed[1] = squashed[1] / 100  # a badly calibrated member: same ranks, same fusion
    assert torch.allclose(rules.rank(squashed, "binary"), expected)
    with pytest.raises(ValueError, match="rank averaging"):
        rules.rank(P, "regression")


def test_majority_vote_and_its_ties() -> None:
    # votes for class 1 (p > 0.5): row0 3/3, row1 0/3, row2 2/3, row3 1/3
    assert torch.allclose(rules.vote(P, "binary"), torch.tensor([1.0, 0.0, 2 / 3, 1 / 3]))
    two = P[:2]  # row 2: one vote each way -> the mean probability decides
    assert torch.allclose(rules.vote(two, "binary")[2], torch.tensor(0.4))
    classes = torch.tensor([[[0.6, 0.3, 0.1]], [[0.2, 0.5, 0.3]], [[0.5, 0.4, 0.1]]])  # votes 0, 1, 0
    fused = rules.vote(classes, "multiclass")[0]
    assert fused.argmax() == 0 and torch.allclose(fused, torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-5)
    tie = rules.vote(classes[:2], "multiclass")[0]  # one vote each for 0 and 1: mean p 0.4 vs 0.4 vs 0.2
    assert tie.argmax() in (0, 1) and tie[2] < tie[0]


def test_stacking_learns_to_trust_the_informative_member() -> None:
    torch.manual_seed(0)
    y = (torch.rand(400) < 0.5).float()
    good = torch.where(y == 1, 0.7, 0.3) + 0.05 * torch.randn(400)
    noise = torch.rand(400)
    scores = torch.stack([noise, good.clamp(0.01, 0.99)])
    predict = rules.fit_stacker(scores[:, :200], y[:200], "binary")
    fused = predict(scores[:, 200:])
    assert ((fused > 0.5).float() == y[200:]).float().mean() > 0.95


def test_stacking_regression_recovers_a_linear_blend() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(300), torch.randn(300)
    y = 0.3 * a + 0.7 * b
    predict = rules.fit_stacker(torch.stack([a, b])[:, :200], y[:200], "regression", l2=0.0)
    assert torch.allclose(predict(torch.stack([a, b])[:, 200:]), y[200:], atol=1e-4)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuse")
    runs = []
    for arch in ("shared_bottom", "mmoe"):
        overrides = [f"arch={arch}", "trainer.max_epochs=1", "data.num_train=600", "data.num_val=200",
                     "data.num_test=200", "console.progress_bar=false"]
        record, _ = train_in_process(root / arch, overrides)
        assert record["status"] == "complete"
        runs.append(root / arch)
    return runs


def test_fuse_reports_members_and_every_rule_and_fits_the_stacker_on_validation(two_runs, tmp_path,
                                                                                  monkeypatch) -> None:
    seen = []
    original = rules.fit_stacker

    def spy(val_scores, val_labels, kind, **kw):
        seen.append((val_scores.shape[1], val_labels.clone()))
        return original(val_scores, val_labels, kind, **kw)

    monkeypatch.setattr(rules, "fit_stacker", spy)
    assert fuse_cli.main([*map(str, two_runs), "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "fusion.json").read_text())
    # the synthetic tasks are regressions: no rank averaging or voting for them
    assert [r["name"] for r in rows] == ["shared_bottom", "mmoe", "mean", "weighted", "stacking"]
    # the stacker saw validation rows (200) and their labels, never test's
    frames = fuse_cli._split_frames(json.loads((two_runs[0] / "results.json").read_text())["config"])
    assert seen and all(n == len(frames["val"]) for n, _ in seen)
    # the mean of two members' probabilities, checked against the members' own scores
    from mtlrec.predict import RunScorer

    members = [RunScorer(r).predict(frames["test"]) for r in two_runs]
    task = next(iter(members[0]))
    table = RunScorer(two_runs[0]).preprocessor.transform(frames["test"])
    mean = torch.as_tensor((members[0][task] + members[1][task]) / 2)
    objective = RunScorer(two_runs[0]).objectives[task]
    expected = fuse_cli._metrics(objective, mean, table.labels[task], objective.task.kind)
    assert rows[2]["metrics"][task] == pytest.approx(expected)
    assert "| mean | fusion |" in (tmp_path / "fusion.md").read_text()


def test_runs_of_other_data_are_refused_in_one_line(two_runs, tmp_path, capsys) -> None:
    other, _ = train_in_process(tmp_path / "other", ["data.num_train=500", "trainer.max_epochs=1",
                                                     "console.progress_bar=false"])
    assert fuse_cli.main([str(two_runs[0]), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and err.count("\n") == 1
