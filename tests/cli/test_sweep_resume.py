"""Sweeps end to end: a real Hydra multirun, a report on it, and resuming.

Re-running a finished sweep skips every run; a run whose results are missing, failed or from a
different config is redone; the report turns the sweep folder into a table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtlrec.report.cli import main as report_main

SMALL = ["data.num_train=1500", "data.num_val=300", "data.num_test=300", "data.dim=8", "trainer.max_epochs=2"]


def _sweep(sweep_dir: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mtlrec.train", "-m", "arch=mmoe,shared_bottom", *SMALL, f"hydra.sweep.dir={sweep_dir}", *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def _run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/results.json"))


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    sweep_dir = root / "multirun"
    proc = _sweep(sweep_dir, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, sweep_dir


def test_sweep_writes_one_complete_result_per_job_and_reports_a_table(finished_sweep, tmp_path, capsys) -> None:
    _, sweep_dir = finished_sweep
    runs = _run_dirs(sweep_dir)
    assert [p.name.split(",")[0] for p in runs] == ["arch=mmoe", "arch=shared_bottom"]
    assert all(json.loads((p / "results.json").read_text())["status"] == "complete" for p in runs)
    code = report_main([str(sweep_dir), "--rows", "arch", "--out", str(tmp_path / "report")])
    assert code in (0, None)
    table = (tmp_path / "report" / "results.md").read_text()
    assert "mmoe" in table and "shared_bottom" in table and "task1/mse" in table


def test_rerunning_a_finished_sweep_skips_every_run_and_redoes_broken_ones(finished_sweep) -> None:
    root, sweep_dir = finished_sweep
    runs = _run_dirs(sweep_dir)
    before = {p: (p / "results.json").read_bytes() for p in runs}
    # break the second run as a killed or crashed job would leave it: a "failed" record
    broken = runs[1]
    record = json.loads((broken / "results.json").read_text())
    record.update(status="failed", error="RuntimeError: killed")
    (broken / "results.json").write_text(json.dumps(record))

    proc = _sweep(sweep_dir, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert log.count("skipping:") == 1
    assert (runs[0] / "results.json").read_bytes() == before[runs[0]]  # untouched
    redone = json.loads((broken / "results.json").read_text())
    assert redone["status"] == "complete" and redone["config_hash"] == record["config_hash"]


def test_a_sweep_restored_from_its_archive_skips_every_run(finished_sweep, tmp_path) -> None:
    import shutil

    from mtlrec.report.archive import archive

    root, sweep_dir = finished_sweep
    archive([sweep_dir], tmp_path / "runs")
    restored = tmp_path / "restored"
    shutil.copytree(tmp_path / "runs", restored)  # e.g. a new machine with only the committed archive
    proc = _sweep(restored, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("skipping:") == 2
    assert not any(restored.glob("*/checkpoints"))  # nothing was trained
