"""Data parallelism: the index-batch sampler gives every process its share so that each training
row is seen exactly once per epoch, every process takes the same steps, and a step's rows across
the processes are one process's global batch; a 2-process CPU run (gloo) ends where one process
on the same global batch ends, and writes one results.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mtlrec.data.table import IndexBatchSampler
from tests.conftest import train_in_process


@pytest.mark.parametrize("rows, batch, world", [(1000, 64, 2), (1003, 50, 3), (97, 10, 2), (40, 10, 4)])
def test_every_row_once_per_epoch_across_processes(rows, batch, world) -> None:
    single = IndexBatchSampler(rows, batch * world, shuffle=True, seed=7)
    shards = [IndexBatchSampler(rows, batch, shuffle=True, seed=7, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 3):
        for sampler in (single, *shards):
            sampler.set_epoch(epoch)
        per_rank = [list(s) for s in shards]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(single)  # same steps everywhere
        seen = torch.cat([i for batches in per_rank for i in batches])
        assert sorted(seen.tolist()) == list(range(rows))  # every row exactly once
        for step, whole in enumerate(single):  # one step's rows across the processes = the global batch
            assert sorted(torch.cat([b[step] for b in per_rank]).tolist()) == sorted(whole.tolist())
    evaluated = [list(IndexBatchSampler(rows, batch, shuffle=False, rank=r, world_size=world)) for r in range(world)]
    covered = [i for batches in evaluated for s in batches for i in range(rows)[s]]
    assert covered == list(range(rows))


def test_a_last_batch_smaller_than_the_processes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"data.loader.batch_size=10: with 4 processes the last training batch"):
        IndexBatchSampler(41, 10, shuffle=True, world_size=4)


SIZES = ["data.num_train=1000", "data.num_val=300", "data.num_test=300", "trainer.max_epochs=3",
         "trainer.accelerator=cpu", "console.progress_bar=false"]


def _train(tmp_path, name, *overrides) -> dict:
    """A run through the real entry point, in its own process (the 2-process runs spawn from it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run_dir = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "mtlrec.train", *SIZES, f"hydra.run.dir={run_dir}", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1, proc.stdout[-2000:]  # one process prints the results
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("weighting", ["fixed", "dwa", "uncertainty", "gradnorm", "upgrad"])
def test_two_processes_end_where_one_process_on_the_global_batch_ends(weighting, tmp_path) -> None:
    # the one-process reference trains in this process (a subprocess would only add its start-up time)
    one, _ = train_in_process(tmp_path / "one", [*SIZES, "data.loader.batch_size=200", f"weighting={weighting}"])
    two = _train(tmp_path, "two", "data.loader.batch_size=100", "trainer=ddp", f"weighting={weighting}")
    assert two["config"]["trainer"]["devices"] == 2 and two["config"]["trainer"]["strategy"] == "ddp"
    for split in ("val", "test"):
        for task, metrics in one["metrics"][split].items():
            for name, value in metrics.items():
                assert two["metrics"][split][task][name] == pytest.approx(value, abs=1e-4), (split, task, name)
    # the epoch losses are the whole split's (averaged over the processes), not rank 0's share
    for a, b in zip(one["train_loss_per_epoch"], two["train_loss_per_epoch"], strict=True):
        assert b == pytest.approx(a, abs=1e-4)
    assert one["best_epoch"] == two["best_epoch"]
    for a, b in zip(one["weights"]["per_epoch"], two["weights"]["per_epoch"], strict=True):  # the task weights
        assert b == pytest.approx(a, abs=1e-4)
    # gate utilisation over the whole validation split, not rank 0's share
    for a, b in zip(one["gates"]["per_epoch"], two["gates"]["per_epoch"], strict=True):
        for gate, stats in a["gates"].items():
            assert b["gates"][gate]["mean"] == pytest.approx(stats["mean"], abs=1e-4), gate
            assert b["gates"][gate]["entropy"] == pytest.approx(stats["entropy"], abs=1e-4), gate
