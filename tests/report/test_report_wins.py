"""Paired per-seed wins against the baseline, and ``--task-mean`` derived columns.

Hand-made runs, arch × data.correlation, with every per-seed value chosen so the exact counts
are known: a win, a tie and a loss in one column, a seed the baseline never ran, and a baseline
at the other correlation that would flip the counts if runs were paired across correlations.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_fixtures import write_run

from mtlrec.report.cli import main
from mtlrec.report.collect import add_task_mean, collect
from mtlrec.report.render import format_wins, to_csv, to_latex, to_markdown
from mtlrec.report.stats import Wins, paired_wins
from mtlrec.report.table import build_table

# (arch, correlation) -> seed -> (t0/mse, t0/auc, t1/mse); t0/calib (no known direction) = seed / 10.
VALUES = {
    ("mmoe", "0.5"): {0: (0.10, 0.80, 0.50), 1: (0.20, 0.70, 0.40), 2: (0.30, 0.90, 0.30), 3: (0.01, 0.99, 0.20)},
    ("shared_bottom", "0.5"): {0: (0.15, 0.75, 0.60), 1: (0.20, 0.72, 0.50), 2: (0.25, 0.85, 0.40)},  # no seed 3
    ("mmoe", "1.0"): {s: (0.50, 0.60, 0.50) for s in range(3)},
    ("shared_bottom", "1.0"): {s: (0.10, 0.90, 0.10) for s in range(3)},
}
BASELINE = {"arch": "shared_bottom"}
ROWS = ["arch=mmoe,data.correlation=0.5", "arch=mmoe,data.correlation=1.0",
        "arch=shared_bottom,data.correlation=0.5", "arch=shared_bottom,data.correlation=1.0"]


def payload(arch: str, corr: str, seed: int, test: dict[str, Any], config_hash: str | None = None) -> dict[str, Any]:
    return {
        "format": 1, "status": "complete", "error": None, "config": {"arch": arch, "seed": seed},
        "config_hash": config_hash or f"{arch}-{corr}-{seed}",
        "overrides": [f"arch={arch}", f"data.correlation={corr}", f"seed={seed}"], "seed": seed,
        "main_task": "t0", "num_parameters": 100, "best_epoch": 1,
        "metrics": {"val": test, "test": test},
        "timing": {"train_seconds": 1.0, "train_samples_per_second": 50.0}, "weights": {},
    }


def metrics(values: tuple[float, float, float], seed: int) -> dict[str, Any]:
    t0_mse, t0_auc, t1_mse = values
    return {"t0": {"mse": t0_mse, "auc": t0_auc, "calib": seed / 10}, "t1": {"mse": t1_mse}}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    job = 0
    for (arch, corr), seeds in VALUES.items():
        for seed, values in seeds.items():
            write_run(root / str(job), payload(arch, corr, seed, metrics(values, seed)))
            job += 1
    return root


def wins_of(table, row: int, column: str) -> tuple[int | None, int | None, int]:
    w = table.cells[(row, f"test/{column}")].wins
    return (w.wins, w.ties, w.n)


# --------------------------------------------------------------------------- counting


def test_paired_wins_counts_direction_ties_and_nan() -> None:
    pairs = [(0.1, 0.2), (0.2, 0.2), (0.3, 0.2), (math.nan, 0.2), (0.1, math.nan)]
    assert paired_wins(pairs, "min") == Wins(1, 1, 3)
    assert paired_wins(pairs, "max") == Wins(1, 1, 3)
    assert paired_wins(pairs, None) == Wins(None, None, 3)
    assert paired_wins([], "max") == Wins(0, 0, 0)
    assert Wins(1, 1, 3).losses == 1


def test_format_wins() -> None:
    assert format_wins(Wins(8, 0, 10)) == "8/10"
    assert format_wins(Wins(7, 1, 10)) == "7/10 (1 tie)"
    assert format_wins(Wins(0, 3, 3)) == "0/3 (3 ties)"
    assert format_wins(Wins(None, None, 3)) == "—"
    assert format_wins(None) == "—"
    assert format_wins(None, is_baseline=True) == "(baseline)"


# --------------------------------------------------------------------------- the table


def test_exact_wins_pair_same_seed_and_same_other_factors(runs: Path) -> None:
    t = build_table(collect([runs]), baseline=BASELINE)
    assert [t.label(i) for i in range(4)] == ROWS and t.baseline_rows == [2, 3, 2, 3]
    # MMoE at 0.5 has seeds 0-3, its baseline 0-2: seed 3 (a clear win everywhere) is not paired.
    assert t.cells[(0, "test/t0/mse")].summary.n == 4
    assert wins_of(t, 0, "t0/mse") == (1, 1, 3)  # seed 0 win, seed 1 tie (0.20 = 0.20), seed 2 loss
    assert wins_of(t, 0, "t0/auc") == (2, 0, 3)  # higher is better: seeds 0 and 2
    assert wins_of(t, 0, "t1/mse") == (3, 0, 3)
    assert wins_of(t, 0, "t0/calib") == (None, None, 3)  # unknown direction: pairs counted, no wins
    # At 1.0 MMoE loses every seed; had it been paired with the 0.5 baseline it would win some.
    assert wins_of(t, 1, "t0/mse") == (0, 0, 3)
    assert wins_of(t, 1, "t0/auc") == (0, 0, 3)
    assert t.cells[(2, "test/t0/mse")].wins is None and t.cells[(3, "test/t0/mse")].wins is None
    assert t.paired_on == []
    assert not any("paired" in w for w in t.warnings)


def test_no_wins_without_baseline(runs: Path) -> None:
    t = build_table(collect([runs]))
    assert all(c.wins is None for c in t.cells.values())
    assert "wins" not in to_markdown(t) and "wins" not in to_csv(t)


def test_pooled_factor_is_part_of_the_pairing(runs: Path) -> None:
    t = build_table(collect([runs]), row_keys=["arch"], baseline=BASELINE)
    assert t.paired_on == ["data.correlation"]
    # Units (seed, correlation): 3 at 0.5 (seed 3 unpaired) + 3 at 1.0; wins only at 0.5.
    assert wins_of(t, 0, "t0/mse") == (1, 1, 6)
    assert wins_of(t, 0, "t0/auc") == (2, 0, 6)
    assert ("with the same seed and the same data.correlation at k of the n (seed, data.correlation) pairs "
            "both ran" in to_markdown(t))


def test_runs_sharing_a_seed_are_left_out_with_a_warning(runs: Path, tmp_path: Path) -> None:
    # A second MMoE seed-0 run at 0.5 with another config hash (say, a changed default).
    write_run(runs / "99", payload("mmoe", "0.5", 0, metrics((0.9, 0.1, 0.9), 0), config_hash="other"))
    t = build_table(collect([runs]), baseline=BASELINE)
    assert t.cells[(0, "test/t0/mse")].summary.n == 5
    assert wins_of(t, 0, "t0/mse") == (0, 1, 2)  # seed 0 dropped: seed 1 tie, seed 2 loss
    assert any("arch=mmoe,data.correlation=0.5: several runs share seed 0" in w for w in t.warnings)


def test_no_shared_seed_warns(tmp_path: Path) -> None:
    write_run(tmp_path / "0", payload("mmoe", "0.5", 0, metrics((0.1, 0.9, 0.1), 0)))
    write_run(tmp_path / "1", payload("shared_bottom", "0.5", 1, metrics((0.2, 0.8, 0.2), 1)))
    t = build_table(collect([tmp_path]), baseline=BASELINE)
    assert wins_of(t, 0, "t0/mse") == (0, 0, 0)
    assert any("share no seed" in w for w in t.warnings)
    assert to_markdown(t).splitlines()[2].split(" | ")[2] == "0/0"


# --------------------------------------------------------------------------- rendering


def test_markdown_latex_and_csv(runs: Path) -> None:
    c = collect([runs])
    t = build_table(c, baseline=BASELINE)
    lines = to_markdown(t, c).splitlines()
    header = lines[0].strip("| ").split(" | ")
    assert header == ["arch", "data.correlation", "t0/auc", "t0/auc wins", "t0/calib", "t0/mse", "t0/mse wins",
                      "t1/mse", "t1/mse wins", "samples/s", "params"]  # no wins column for calib
    cells = [line.strip("| ").split(" | ") for line in lines[2:6]]
    assert [row[header.index("t0/mse wins")] for row in cells] == ["1/3 (1 tie)", "0/3", "(baseline)", "(baseline)"]
    assert [row[header.index("t0/auc wins")] for row in cells] == ["2/3", "0/3", "(baseline)", "(baseline)"]
    assert any(line.startswith("Wins k/n:") and line.endswith("Metrics of unknown direction have no wins column.")
               for line in lines)

    tex = to_latex(t)
    assert r"t0/mse wins" in tex and r"1/3 (1 tie)" in tex

    frame = pd.read_csv(io.StringIO(to_csv(t)))
    assert list(frame["test/t0/mse/wins"].astype("Int64")) == [1, 0, pd.NA, pd.NA]
    assert list(frame["test/t0/mse/ties"].astype("Int64")) == [1, 0, pd.NA, pd.NA]
    assert list(frame["test/t0/mse/paired_n"].astype("Int64")) == [3, 3, pd.NA, pd.NA]
    assert list(frame["test/t0/calib/paired_n"].astype("Int64")) == [3, 3, pd.NA, pd.NA]
    assert frame["test/t0/calib/wins"].isna().all()
    text = to_csv(t)
    assert "\n" + ",".join(["mmoe", "0.5"]) in text and ",1,1,3," in text  # integers, not 1.0
    cols = list(frame.columns)
    at = cols.index("test/t0/mse/mean")
    assert cols[at:at + 8] == [f"test/t0/mse/{k}" for k in ("mean", "std", "n", "best", "p_value", "wins", "ties",
                                                             "paired_n")]


# --------------------------------------------------------------------------- task means


def test_task_mean_per_run_then_aggregated(runs: Path) -> None:
    c = collect([runs])
    column, warnings = add_task_mean(c, "test", "mse")
    assert column == "test/mean/mse" and warnings == []
    assert c.derived == {"test/mean/mse": ["t0", "t1"]}
    per_run = dict(zip(c.runs["run_dir"].map(lambda d: Path(d).name), c.runs[column]))
    assert per_run["0"] == (0.10 + 0.50) / 2 and per_run["3"] == pytest.approx(0.105, abs=1e-15)
    t = build_table(c, baseline=BASELINE)
    assert t.columns[-1] == "test/mean/mse"  # derived columns at the right edge
    mmoe = [math.fsum(v[0::2]) / 2 for v in VALUES[("mmoe", "0.5")].values()]
    cell = t.cells[(0, "test/mean/mse")]
    assert cell.summary.n == 4
    assert cell.summary.mean == pytest.approx(sum(mmoe) / 4, abs=1e-15)
    assert cell.summary.std == pytest.approx(pd.Series(mmoe).std(ddof=1), rel=1e-12)
    # Per seed: 0.30 vs 0.375, 0.30 vs 0.35, 0.30 vs 0.325 -> three wins, though t0 alone has one.
    assert wins_of(t, 0, "mean/mse") == (3, 0, 3)
    assert wins_of(t, 1, "mean/mse") == (0, 0, 3)
    assert "mean/mse: per-run mean of mse over tasks t0, t1" in to_markdown(t)


def test_task_mean_over_only_the_tasks_that_have_it(runs: Path) -> None:
    c = collect([runs])
    add_task_mean(c, "test", "auc")
    assert c.derived == {"test/mean/auc": ["t0"]}
    assert (c.runs["test/mean/auc"] == c.runs["test/t0/auc"]).all()
    t = build_table(c, baseline=BASELINE, metrics=["t1/*"])  # kept whatever --metrics says
    assert t.columns == ["test/t1/mse", "test/mean/auc"]
    assert wins_of(t, 0, "mean/auc") == (2, 0, 3)


def test_task_mean_non_number_and_differing_task_sets(runs: Path) -> None:
    write_run(runs / "90", payload("mmoe", "0.5", 7, {"t0": {"mse": 0.1}, "t1": {"mse": math.nan}}))
    write_run(runs / "91", payload("mmoe", "0.5", 8, {"t0": {"mse": 0.1}}))
    c = collect([runs])
    column, warnings = add_task_mean(c, "test", "mse")
    values = dict(zip(c.runs["run_dir"].map(lambda d: Path(d).name), c.runs[column]))
    assert math.isnan(values["90"])  # never the mean of the healthy task alone
    assert values["91"] == 0.1
    assert warnings == [
        "test/mean/mse averages different tasks in different runs (t0: 1 run(s); t0,t1: 14 run(s)); "
        "those means are not comparable",
        "test/mean/mse: 1 run(s) logged a non-number mse for some task; their task mean is left out"]


def test_task_mean_errors(runs: Path) -> None:
    with pytest.raises(ValueError, match=r"no task of the test split logged 'ndcg'; metrics there: "
                                         r"\['auc', 'calib', 'mse'\]"):
        add_task_mean(collect([runs]), "test", "ndcg")
    write_run(runs / "92", payload("mmoe", "0.5", 9, {"mean": {"mse": 0.1}}))
    with pytest.raises(ValueError, match="a task is named 'mean'"):
        add_task_mean(collect([runs]), "test", "mse")


# --------------------------------------------------------------------------- the command


def test_cli_wins_and_task_mean_deterministic(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    argv = [str(runs), "--out", str(out), "--baseline", "arch=shared_bottom", "--task-mean", "mse",
            "--task-mean", "mse,auc"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    header = stdout.splitlines()[0].strip("| ").split(" | ")
    assert header[-6:] == ["mean/mse", "mean/mse wins", "mean/auc", "mean/auc wins", "samples/s", "params"]
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["test/mean/mse/wins"].astype("Int64")) == [3, 0, pd.NA, pd.NA]
    assert list(frame["test/t0/mse/wins"].astype("Int64")) == [1, 0, pd.NA, pd.NA]
    assert list(frame["test/t0/mse/ties"].astype("Int64")) == [1, 0, pd.NA, pd.NA]
    assert list(frame["test/t0/mse/paired_n"].astype("Int64")) == [3, 3, pd.NA, pd.NA]
    assert frame.loc[0, "test/mean/mse/mean"] == pytest.approx((0.3 + 0.3 + 0.3 + 0.105) / 4, abs=1e-15)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(argv) == 0
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}


def test_cli_task_mean_error_exit_2(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(runs), "--task-mean", "ndcg"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--task-mean ndcg: no task of the test split logged 'ndcg'" in err


def test_bare_metric_pattern_matches_every_task(runs: Path) -> None:
    c = collect([runs])
    add_task_mean(c, "test", "mse")
    assert build_table(c, metrics=["mse"]).columns == ["test/t0/mse", "test/t1/mse", "test/mean/mse"]
    with pytest.raises(ValueError, match="no test metric matches"):
        build_table(c, metrics=["ndcg"])  # a typo is not hidden by the task mean always shown


def test_experiment_style_command(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shape of experiments/synthetic_correlation/run.sh: task mean plotted and tabulated."""
    argv = [str(runs), "--rows", "data.correlation,arch", "--metrics", "mse", "--task-mean", "mse",
            "--baseline", "arch=shared_bottom", "--plot-x", "data.correlation", "--plot-metric", "test/mean/mse",
            "--plot-lines", "arch", "--out", str(tmp_path / "report")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| data.correlation | arch | t0/mse | t0/mse wins | t1/mse | t1/mse wins | mean/mse | "
                        "mean/mse wins | samples/s | params |")
    assert lines[2].split(" | ")[3] == "1/3 (1 tie)" and lines[2].split(" | ")[7] == "3/3"
    assert (tmp_path / "report" / "test_mean_mse_vs_data.correlation_by_arch.png").exists()


def test_a_factor_that_goes_with_the_row_key_neither_pools_nor_blocks_the_pairing(tmp_path: Path) -> None:
    """Arms labelled by one key that each set other keys (label=frozen sets backbone.freeze=all):
    those keys take one value per row, so runs pair by seed alone, with no pooling warning."""
    arms = {"scratch": ("none", {0: 0.50, 1: 0.60, 2: 0.55}), "frozen": ("all", {0: 0.70, 1: 0.50, 2: 0.65})}
    for label, (freeze, seeds) in arms.items():
        for seed, auc in seeds.items():
            record = payload(label, "0.5", seed, {"t0": {"auc": auc}})
            record["overrides"] = [f"label={label}", f"backbone.freeze={freeze}", f"seed={seed}"]
            write_run(tmp_path / f"{label}-{seed}", record)
    t = build_table(collect([tmp_path]), row_keys=["label"], baseline={"label": "scratch"})
    assert t.paired_on == [] and not t.warnings  # one value per row: nothing pooled, nothing per seed
    row = [t.label(i) for i in range(2)].index("label=frozen")
    assert wins_of(t, row, "t0/auc") == (2, 0, 3)


def test_a_factor_that_goes_with_the_seed_does_not_block_the_pairing(tmp_path: Path) -> None:
    """init_from=<the source run of the same seed> differs per seed within a row: pair by seed."""
    for label, seeds in {"target_only": {0: 0.5, 1: 0.6}, "init": {0: 0.7, 1: 0.5}}.items():
        for seed, auc in seeds.items():
            record = payload(label, "0.5", seed, {"t0": {"auc": auc}})
            source = [f"init_from=runs/source-seed{seed}"] if label == "init" else []
            record["overrides"] = [f"label={label}", *source, f"seed={seed}"]
            write_run(tmp_path / f"{label}-{seed}", record)
    t = build_table(collect([tmp_path]), row_keys=["label"], baseline={"label": "target_only"})
    assert t.paired_on == []
    assert [w for w in t.warnings if "differ between the seeds" in w] == [
        "factor(s) ['init_from'] differ between the seeds of a row (one value per seed, e.g. each seed's own source "
        "run): check that the seeds of a row differ in nothing else by intent"]
    row = [t.label(i) for i in range(2)].index("label=init")
    assert wins_of(t, row, "t0/auc") == (1, 0, 2)
