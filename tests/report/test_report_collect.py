"""Collection: which folders are runs, which runs count, and what is listed instead."""

from __future__ import annotations

import shutil
from pathlib import Path

from report_fixtures import KNOWN, make_result, write_run

from mtlrec.report.collect import collect, find_run_dirs, parse_override, parse_value


def test_tidy_frame_of_complete_runs_only(sweep: Path) -> None:
    c = collect([sweep])
    assert len(c.runs) == 6
    assert set(c.runs["status"]) == {"complete"}
    assert c.factors == ["arch"]
    assert sorted(c.runs["arch"]) == ["mmoe"] * 3 + ["shared_bottom"] * 3
    assert {"test/income/auc", "test/income/loss", "test/marital/auc", "val/income/auc"} <= set(c.runs.columns)
    row = c.runs[(c.runs["arch"] == "mmoe") & (c.runs["seed"] == 1)].iloc[0]
    assert row["test/income/auc"] == KNOWN["mmoe"][1][0]
    assert row["val/income/auc"] == KNOWN["mmoe"][1][2]
    assert row["num_parameters"] == 12345
    assert row["train_samples_per_second"] == 1010.0
    assert row["run_dir"].endswith("multirun/arch/1")
    assert 0.1 not in set(c.runs["test/income/auc"])  # the failed run's metrics are not there


def test_failed_and_missing_runs_are_listed_with_reasons(sweep: Path) -> None:
    problems = collect([sweep]).problems.sort_values("run_dir")
    assert list(problems["run_dir"].str.rsplit("/", n=1).str[-1]) == ["6", "7"]
    failed, missing = problems.iloc[0], problems.iloc[1]
    assert failed["status"] == "failed" and failed["reason"] == "failed: CUDA out of memory"
    assert failed["overrides"] == "arch=mmoe seed=3"
    assert missing["status"] == "missing" and "no results.json" in missing["reason"]
    assert missing["overrides"] == "arch=ple seed=0"  # read back from .hydra/overrides.yaml


def test_unreadable_and_unknown_format(tmp_path: Path) -> None:
    bad = write_run(tmp_path / "a", None)
    (bad / "results.json").write_text('{"format": 1, "status": "compl')  # half-copied file
    newer = make_result("mmoe", 0, income_auc=0.9, income_loss=0.3, val_auc=0.9)
    newer["format"] = 2
    write_run(tmp_path / "b", newer)
    c = collect([tmp_path])
    assert c.runs.empty
    reasons = dict(zip(c.problems["run_dir"].str[-1], c.problems["reason"]))
    assert reasons["a"].startswith("unreadable results.json")
    assert reasons["b"].startswith("unsupported results format 2")


def test_path_may_be_a_run_dir_or_results_file_and_is_counted_once(sweep: Path) -> None:
    assert len(collect([sweep / "0"]).runs) == 1
    assert len(collect([sweep / "0" / "results.json"]).runs) == 1
    assert len(collect([sweep, sweep / "0", sweep.parent]).runs) == 6
    assert not any(".hydra" in p.as_posix() for p in find_run_dirs([sweep]))


def test_duplicate_config_and_seed_kept_once_and_reported(sweep: Path, tmp_path: Path) -> None:
    rerun = tmp_path / "multirun" / "arch_rerun"
    shutil.copytree(sweep / "0", rerun / "0")
    c = collect([tmp_path / "multirun"])
    assert len(c.runs) == 6
    assert len(c.duplicates) == 1
    dup = c.duplicates.iloc[0]
    assert dup["run_dir"].endswith("arch_rerun/0") and dup["kept"].endswith("arch/0")


def test_failed_run_superseded_by_a_later_complete_one(tmp_path: Path) -> None:
    write_run(tmp_path / "first" / "0", make_result("mmoe", 0, income_auc=0.1, income_loss=9, val_auc=0.1,
                                                    status="failed", config_hash="h0"))
    write_run(tmp_path / "second" / "0", make_result("mmoe", 0, income_auc=0.95, income_loss=0.3, val_auc=0.95,
                                                     config_hash="h0"))
    c = collect([tmp_path])
    assert list(c.runs["test/income/auc"]) == [0.95]
    assert "superseded by complete run" in c.problems.iloc[0]["reason"]


def test_numeric_factors_and_override_syntax(tmp_path: Path) -> None:
    for i, corr in enumerate(["0.5", "1", "0.25"]):
        write_run(tmp_path / str(i), make_result("mmoe", 0, income_auc=0.9, income_loss=0.3, val_auc=0.9,
                                                 extra_overrides=[f"+data.correlation={corr}", "~foo"]))
    c = collect([tmp_path])
    assert c.factors == ["arch", "data.correlation"]
    assert c.runs["data.correlation"].dtype == "float64"
    assert sorted(c.runs["data.correlation"]) == [0.25, 0.5, 1.0]
    assert parse_override("++a.b='x y'") == ("a.b", "x y")
    assert parse_override("~a") is None
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-3") == 0.001 and parse_value("mmoe") == "mmoe"


def test_nothing_found(tmp_path: Path) -> None:
    c = collect([tmp_path, tmp_path / "does-not-exist"])
    assert c.empty and c.runs.empty


def test_discovery_order_is_paths_as_given_then_natural(tmp_path: Path) -> None:
    for name in ("b/10", "b/2", "a/1"):
        write_run(tmp_path / name, None)
    found = [p.relative_to(tmp_path).as_posix() for p in find_run_dirs([tmp_path / "b", tmp_path / "a"])]
    assert found == ["b/2", "b/10", "a/1"]
