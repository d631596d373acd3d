"""Interrupted work resumes to the same record: a run killed with -9 mid-training and started
again ends with the metrics of an uninterrupted run; a killed sweep relaunched skips what
finished and resumes what did not; a run that early-stopped keeps its stop when resumed; the same
config and seed give the same metrics. Kills are real (SIGKILL to a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtlrec.report.collect import collect
from tests.conftest import train_in_process

SMALL = ["data.num_train=6000", "data.num_val=600", "data.num_test=600", "data.dim=8", "data.loader.batch_size=64",
         "console.progress_bar=false"]


def _command(*overrides: str) -> list[str]:
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags come before the overrides
    return [sys.executable, "-m", "mtlrec.train", *flags, *SMALL, *[o for o in overrides if not o.startswith("-")]]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_after_checkpoint(cmd: list[str], where: Path, cwd: Path, epochs: int = 1, pattern: str = "") -> None:
    """Start ``cmd``, wait until the checkpoint ``where`` (or the first match of ``where.glob(pattern)``)
    holds ``epochs`` finished epochs, then SIGKILL it (it is then in the next epoch's training steps)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}")
            checkpoint = next(iter(sorted(where.glob(pattern))), where / "absent") if pattern else where
            if checkpoint.exists():
                try:
                    if torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] >= epochs - 1:
                        break
                except Exception:  # still being written
                    pass
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint within 240 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def _metrics(run_dir: Path) -> dict:
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "complete"
    return {"metrics": record["metrics"], "best_epoch": record["best_epoch"], "epochs": record["epochs_trained"],
            "weights": record["weights"], "losses": record["train_loss_per_epoch"]}


def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_metrics(tmp_path) -> None:
    overrides = ["trainer.max_epochs=3", "arch=mmoe"]
    done = subprocess.run(_command(*overrides, f"hydra.run.dir={tmp_path / 'whole'}"), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    cmd = _command(*overrides, f"hydra.run.dir={killed}")
    _kill_after_checkpoint(cmd, killed / "checkpoints" / "last.ckpt", tmp_path)
    assert not (killed / "results.json").exists()
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _metrics(killed) == _metrics(tmp_path / "whole")


def test_a_killed_sweep_relaunched_skips_finished_runs_and_resumes_the_rest(tmp_path) -> None:
    sweep = tmp_path / "multirun"
    cmd = _command("-m", "seed=0,1,2", "trainer.max_epochs=2", "data.num_train=3000", f"hydra.sweep.dir={sweep}")
    # the second job (seed=1) is killed in its second epoch; seed=0 has finished by then
    _kill_after_checkpoint(cmd, sweep, tmp_path, pattern="*seed=1*/checkpoints/last.ckpt")
    run = {seed: next(iter(sweep.glob(f"*seed={seed}*")), None) for seed in range(3)}
    first = run[0] / "results.json"
    finished = first.read_bytes()
    assert not (run[1] / "results.json").exists() and run[2] is None
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert first.read_bytes() == finished  # skipped, not retrained
    assert "resuming interrupted training" in (run[1] / "train.log").read_text()
    collection = collect([sweep])
    assert sorted(collection.runs["seed"]) == [0, 1, 2]  # every run exactly once
    assert collection.problems.empty and collection.duplicates.empty


def test_a_resumed_run_that_had_stopped_early_trains_no_more_epochs(tmp_path) -> None:
    overrides = [*SMALL, "data.num_train=1500", "trainer.max_epochs=40", "callbacks.early_stopping.patience=1",
                 "optimizer.lr=0.03"]
    record, _ = train_in_process(tmp_path, overrides)
    assert record["epochs_trained"] < 40, "the run did not stop early; the test needs one that does"
    # what a kill during the final evaluation leaves: checkpoints, no results
    (tmp_path / "results.json").unlink()
    resumed, _ = train_in_process(tmp_path, overrides)
    assert resumed["epochs_trained"] == record["epochs_trained"]
    assert resumed["metrics"] == record["metrics"]


def test_the_same_config_and_seed_give_the_same_metrics(tmp_path) -> None:
    overrides = [*SMALL, "data.num_train=1500", "trainer.max_epochs=2", "arch=ple", "weighting=uncertainty"]
    first, _ = train_in_process(tmp_path / "a", overrides)
    second, _ = train_in_process(tmp_path / "b", overrides)
    assert first["metrics"] == second["metrics"] and first["weights"] == second["weights"]
