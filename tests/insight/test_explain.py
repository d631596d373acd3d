"""Permutation importance and ``mtlrec-explain`` on a real trained run: task ``a`` is made of
``x1``, task ``b`` of ``x2``; ``noise`` is in no label and ``constant`` cannot be seen at all.
The importance of ``x1`` is large for ``a`` and ≈ 0 for ``b`` (and the reverse for ``x2``), the
unseen input scores exactly 0, a group of inputs is permuted together, and the CLI writes its
tables and figures (and refuses what it cannot explain in one line)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mtlrec.insight import importance as imp
from mtlrec.insight.cli import main
from mtlrec.predict import RunScorer
from tests.conftest import train_in_process


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    n = 3000
    x1, x2, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "blue"], n)
    pd.DataFrame({"x1": x1, "x2": x2, "noise": noise, "colour": colour, "constant": 1.0,
                  "a": (x1 + 0.3 * rng.normal(size=n) > 0).astype(int),
                  "b": (x2 + 0.3 * rng.normal(size=n) > 0).astype(int)}).to_csv(root / "d.csv", index=False)
    overrides = ["data=tabular", f"data.root={root}", "data.files=d.csv",
                 "data.features={numeric: [x1, x2, noise, constant], categorical: [colour]}",
                 "data.tasks=[{name: a, kind: binary}, {name: b, kind: binary}]", "data.main_task=a",
                 "arch=mmoe", "trainer.max_epochs=15", "data.loader.batch_size=128", "insight.conflict_every=5",
                 "console.progress_bar=false"]
    record, _ = train_in_process(root / "run", overrides)
    assert record["status"] == "complete"
    return root / "run"


def test_importance_follows_what_each_label_is_made_of(run) -> None:
    scorer = RunScorer(run)
    frame = _val_frame(run)

    def importance(groups):
        return imp.permutation_importance(scorer.architecture, scorer.preprocessor, scorer.objectives, frame,
                                          imp.check_groups(groups, scorer.schema), repeats=3, seed=0)

    result = importance({})
    summary = imp.summarise(result)
    assert result["baseline"]["a"]["value"] > 0.85 and result["baseline"]["b"]["value"] > 0.85
    assert summary["x1"]["a"]["metric_mean"] > 0.25 and abs(summary["x1"]["b"]["metric_mean"]) < 0.03
    assert summary["x2"]["b"]["metric_mean"] > 0.25 and abs(summary["x2"]["a"]["metric_mean"]) < 0.03
    assert abs(summary["noise"]["a"]["metric_mean"]) < 0.03 and abs(summary["noise"]["b"]["metric_mean"]) < 0.03
    assert summary["x1"]["a"]["loss_mean"] > 0.1  # the loss rises with the metric's drop
    for task in ("a", "b"):  # a constant column cannot be seen: permuting it changes nothing at all
        assert result["importance"]["constant"][task]["metric"] == [0.0] * 3
        assert result["importance"]["constant"][task]["loss"] == [0.0] * 3
    spec = imp.specificity(summary, ["a", "b"])
    assert spec["x1"] == "a" and spec["x2"] == "b" and spec["constant"] == "none"
    # a group is permuted with one permutation: both tasks lose, and its members are not scored alone
    grouped = imp.summarise(importance({"both": ["x1", "x2"]}))
    assert "x1" not in grouped and "x2" not in grouped and "noise" in grouped
    assert grouped["both"]["a"]["metric_mean"] > 0.25 and grouped["both"]["b"]["metric_mean"] > 0.25
    assert spec != {} and imp.specificity(grouped, ["a", "b"])["both"] == "shared"


def test_an_input_the_model_cannot_see_scores_exactly_zero(run) -> None:
    """Cut ``noise`` (a varying column) out of the trained model: the encoder dimensions it moves
    get zero weight in the experts and the gates. Permuting it must then change nothing at all."""
    import torch

    scorer = RunScorer(run)
    frame = _val_frame(run)
    table = scorer.preprocessor.transform(frame, split="val")
    moved = frame.copy()
    moved["noise"] = frame["noise"].to_numpy()[::-1]
    encoder = scorer.architecture.encoder
    with torch.no_grad():
        before = encoder(table[slice(0, len(table))])
        after = encoder(scorer.preprocessor.transform(moved, split="val")[slice(0, len(table))])
        dims = torch.nonzero((before != after).any(0)).flatten()
        assert len(dims) >= 1
        scorer.architecture.experts.weights[0][:, dims, :] = 0.0
        for gate in scorer.architecture.gates.values():
            gate.linear.weight[:, dims] = 0.0
    result = imp.permutation_importance(scorer.architecture, scorer.preprocessor, scorer.objectives, frame,
                                        imp.default_groups(scorer.schema), repeats=2, seed=1)
    for task in ("a", "b"):
        assert result["importance"]["noise"][task]["metric"] == [0.0, 0.0]
        assert result["importance"]["noise"][task]["loss"] == [0.0, 0.0]
        assert result["importance"][{"a": "x1", "b": "x2"}[task]][task]["metric"][0] > 0.25


def test_groups_that_would_hide_an_input_are_refused() -> None:
    from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec

    schema = Schema([FeatureSpec("x1", "numeric"), FeatureSpec("x2", "numeric"), FeatureSpec("noise", "numeric")],
                    [TaskSpec("a", "binary", "a")], "a")
    assert imp.check_groups({"pair": ["x1", "x2"]}, schema) == {"pair": ["x1", "x2"], "noise": ["noise"]}
    with pytest.raises(ValueError, match=r"--group: the group name\(s\) \['x1'\] are also inputs"):
        imp.check_groups({"x1": ["x2", "noise"]}, schema)
    with pytest.raises(ValueError, match=r"--group: \['x2'\] are in more than one group"):
        imp.check_groups({"g": ["x1", "x2"], "h": ["x2", "noise"]}, schema)


def _val_frame(run):
    from mtlrec.insight.cli import _frame

    record = json.loads((run / "results.json").read_text())
    return _frame(record["config"], "val", None, 0)


def test_explain_writes_its_tables_and_figures(run, tmp_path, capsys) -> None:
    out = tmp_path / "explain"
    assert main([str(run), "--repeats", "2", "--out", str(out)]) == 0
    text = (out / "EXPLAIN.md").read_text()
    assert "#### MMoE: permutation importance on val" in text and "| x1 |" in text
    assert "gate utilisation" in text and "Expert-collapse check" in text and "task-gradient conflict" in text
    assert "| MMoE | a~b |" in text  # the relations table
    for stem in ("importance_MMoE_a", "importance_MMoE_b", "gates_MMoE", "conflict_MMoE"):
        assert (out / f"{stem}.png").exists(), stem
    saved = json.loads((out / "explain.json").read_text())
    assert saved["summary"]["models"]["MMoE"]["importance"]["specificity"]["x1"] == "a"
    assert capsys.readouterr().out.startswith("## What the models learned (1 run(s), 1 model(s))")


def test_what_cannot_be_explained_is_one_line(run, tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nothing-here")]) == 2
    assert main([str(run), "--group", "g=x1,price"]) == 2
    assert main([str(run), "--group", "nonsense"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 3 and all(line.startswith("mtlrec-explain: error: ") for line in lines)
    assert "no complete results.json" in lines[0] and "['price'] are not inputs of this run" in lines[1]
    assert "write NAME=COLUMN,COLUMN" in lines[2]


def test_gate_overlap_is_a_histogram_intersection_over_the_experts_both_gates_see() -> None:
    from mtlrec.insight.cli import gate_overlaps

    nan = float("nan")
    gates = {"names": ["a", "b", "c"], "matrix": [[0.5, 0.5, 0.0, nan], [0.0, 0.5, 0.5, nan], [nan, nan, nan, 1.0]]}
    assert gate_overlaps(gates) == {"a~b": pytest.approx(0.5)}  # c sees no expert of a or b
    same = {"names": ["a", "b"], "matrix": [[0.2, 0.8], [0.8, 0.2]]}
    assert gate_overlaps(same) == {"a~b": pytest.approx(0.4)}
    assert gate_overlaps({"names": ["a", "b"], "matrix": [[0.2, 0.8], [0.2, 0.8]]})["a~b"] == pytest.approx(1.0)
