"""The real entry point, end to end: ``python -m mtlrec.train`` in a subprocess.

Each call pays the interpreter + torch/Lightning import (~10 s on 2 cores), so the runs are few and
shared: one module-scoped run serves the completion, table and re-run checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# small and short, but through every default of conf/config.yaml (MMoE, synthetic data, CSV logger)
BASE = [
    "data.num_train=2000", "data.num_val=500", "data.num_test=500", "data.dim=10", "trainer.max_epochs=2",
]


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "mtlrec.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _table_lines(record: dict) -> list[str]:
    """What format_metrics prints, computed here from results.json."""
    lines = [f"{'task':<14}{'metric':<10}{'val':>10}{'test':>10}"]
    for task, metrics in record["metrics"]["test"].items():
        for name, value in metrics.items():
            lines.append(f"{task:<14}{name:<10}{record['metrics']['val'][task][name]:>10.4f}{value:>10.4f}")
    return lines


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    proc = _train(*BASE, f"hydra.run.dir={run_dir}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, run_dir, proc


def test_run_completes_and_writes_results(main_run) -> None:
    root, run_dir, _ = main_run
    rec = _results(run_dir)
    assert rec["status"] == "complete" and rec["error"] is None and rec["format"] == 1
    assert rec["overrides"] == BASE
    assert rec["config"]["arch"]["_target_"].endswith(".MMoE")
    assert rec["main_task"] == "task1" and rec["selection"] == {"monitor": "val/task1/mse", "mode": "min", "per_task": False}
    assert rec["epochs_trained"] == 2 and len(rec["train_loss_per_epoch"]) == 2
    assert rec["best_epoch"] in (1, 2)  # 1-based: epochs trained at the best checkpoint
    for split in ("val", "test"):
        assert set(rec["metrics"][split]) == {"task1", "task2"}
        for task in ("task1", "task2"):
            assert 0 < rec["metrics"][split][task]["mse"] < 10
    assert rec["weights"]["final"] == {"task1": 1.0, "task2": 1.0} and len(rec["weights"]["per_epoch"]) == 2
    assert rec["num_parameters"] > 0 and rec["timing"]["train_samples_per_second"] > 0
    assert (run_dir / ".config_hash").read_text().strip() == rec["config_hash"]
    for name in ("preprocessor.json", ".hydra/config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    assert not list(root.glob("outputs")), "hydra.run.dir was not honoured"


def test_metrics_table_is_printed(main_run) -> None:
    _, run_dir, proc = main_run
    rec = _results(run_dir)
    out = proc.stdout.splitlines()
    for line in _table_lines(rec):
        assert line in out, f"missing {line!r} in stdout:\n{proc.stdout}"
    assert any(l.startswith(f"MMoE on synthetic_p0.5, weighting FixedWeighting (best epoch {rec['best_epoch']} of {rec['epochs_trained']},") for l in out)
    assert f"results: {run_dir / 'results.json'}" in out


def test_rerun_into_the_same_folder_skips(main_run) -> None:
    root, run_dir, _ = main_run
    path = run_dir / "results.json"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    proc = _train(*BASE, f"hydra.run.dir={run_dir}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "skipping" in proc.stdout + proc.stderr
    assert "skipping" in (run_dir / "train.log").read_text()
    assert "Trainer.fit" not in proc.stdout + proc.stderr  # no training at all
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    for line in _table_lines(json.loads(before)):  # the stored result is still reported
        assert line in proc.stdout.splitlines()


def test_ple_run(tmp_path) -> None:
    run_dir = tmp_path / "ple"
    proc = _train(*BASE, "arch=ple", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rec = _results(run_dir)
    assert rec["status"] == "complete"
    assert rec["config"]["arch"]["_target_"].endswith(".PLE") and rec["config"]["arch"]["num_levels"] == 2
    assert "arch=ple" in rec["overrides"]
    assert "PLE on synthetic_p0.5" in proc.stdout


def test_unknown_option_value_fails_before_anything_is_written(tmp_path) -> None:
    run_dir = tmp_path / "bad"
    proc = _train(*BASE, "arch=nope", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.startswith("mtlrec-train: error: arch=nope: no such arch config; the options are aitm, cgc")
    assert "mmoe" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("results.json"))


def test_invalid_data_value_fails_before_results_are_written(tmp_path) -> None:
    run_dir = tmp_path / "bad-corr"
    proc = _train(*BASE, "data.correlation=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "data.correlation must lie in [-1, 1], got 2" in proc.stderr
    assert not (run_dir / "results.json").exists()


def test_multirun_writes_one_result_per_job(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = _train("-m", "arch=mmoe,shared_bottom", *BASE, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = sorted(sweep.rglob("results.json"))
    assert len(found) == 2, found
    records = {_results(p.parent)["config"]["arch"]["_target_"].rsplit(".", 1)[-1]: (p, _results(p.parent)) for p in found}
    assert set(records) == {"MMoE", "SharedBottom"}
    for arch, (path, rec) in records.items():
        assert rec["status"] == "complete"
        option = "arch=mmoe" if arch == "MMoE" else "arch=shared_bottom"
        assert option in rec["overrides"] and option in path.parent.name  # subdir = override_dirname
    assert records["MMoE"][1]["config_hash"] != records["SharedBottom"][1]["config_hash"]


def test_output_has_a_header_and_no_dependency_noise(main_run) -> None:
    _, run_dir, proc = main_run
    out = proc.stdout.splitlines()
    assert out[0].startswith("mtlrec: MMoE (") and "on synthetic_p0.5 (train 2,000 / val 500 / test 500 rows)" in out[0]
    assert out[1].startswith("  tasks: task1 (main), task2; selection: val/task1/mse; at most 2 epochs")
    both = proc.stdout + proc.stderr
    for noise in ("GPU available", "Tip:", "LeafSpec", "weights_only", "Restoring states", "smaller than the logging interval"):
        assert noise not in both, noise
    assert "Epoch 0" not in both  # no progress bar when not attached to a terminal
