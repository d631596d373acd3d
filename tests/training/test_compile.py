"""``compile=true``: the training forward goes through ``torch.compile`` and trains the same model as
eager mode (float noise apart); where compilation cannot work the run trains eagerly after one
warning; the compiled run's first epoch (its compilation) is left out of its throughput."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from mtlrec.training import compiled
from mtlrec.training.timing import TrainThroughput
from tests.conftest import train_in_process

SMALL = ["data=synthetic", "data.num_train=512", "data.num_val=256", "data.num_test=256", "data.loader.batch_size=128",
         "trainer.max_epochs=2", "arch=mmoe", "logger=none"]


@pytest.mark.skipif(compiled.unsupported_reason(torch.device("cpu")) is not None,
                    reason="torch.compile cannot run on this machine (see mtlrec.training.compiled)")
def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    eager, _ = train_in_process(tmp_path / "eager", SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning: it really compiled
        fast, _ = train_in_process(tmp_path / "compiled", [*SMALL, "compile=true"])
    assert fast["config"]["compile"] is True and fast["config_hash"] != eager["config_hash"]
    for split in ("val", "test"):
        for task, metrics in eager["metrics"][split].items():
            for name, value in metrics.items():
                assert fast["metrics"][split][task][name] == pytest.approx(value, abs=1e-4), (split, task, name)
    assert fast["best_epoch"] == eager["best_epoch"]
    for a, b in zip(eager["train_loss_per_epoch"], fast["train_loss_per_epoch"]):
        assert b == pytest.approx(a, abs=1e-5)


@pytest.mark.skipif(compiled.unsupported_reason(torch.device("cpu")) is not None,
                    reason="torch.compile cannot run on this machine (see mtlrec.training.compiled)")
def test_an_epochs_smaller_last_batch_is_not_compiled_again(tmp_path: Path) -> None:
    """500 rows in batches of 128: three full batches and one of 116 per epoch, one graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    record, _ = train_in_process(tmp_path, [*SMALL, "data.num_train=500", "compile=true"])
    assert record["status"] == "complete"
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_compile_falls_back_to_eager_with_one_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)  # a machine without a C++ compiler
    with pytest.warns(UserWarning, match=r"compile=true: Inductor needs a C\+\+ compiler .*training runs eagerly"):
        record, _ = train_in_process(tmp_path, [*SMALL, "compile=true", "trainer.max_epochs=1"])
    assert record["status"] == "complete"


def test_the_default_config_hash_does_not_see_compile_false(tmp_path: Path) -> None:
    from mtlrec.training.results import config_hash

    record, _ = train_in_process(tmp_path, [*SMALL, "trainer.max_epochs=1"])
    without = {k: v for k, v in record["config"].items() if k != "compile"}
    assert config_hash(record["config"]) == config_hash(without)  # old runs keep their hash


class _Epochs:
    """A trainer as TrainThroughput sees it: a world size."""

    world_size = 1


def test_throughput_leaves_the_warmup_epochs_out(monkeypatch) -> None:
    clock = iter([0.0, 10.0, 10.0, 11.0, 11.0, 12.0])  # epoch 1: 10 s, epochs 2 and 3: 1 s each
    monkeypatch.setattr("mtlrec.training.timing.time.perf_counter", lambda: next(clock))
    timer = TrainThroughput(warmup_epochs=1)
    for _ in range(3):
        timer.on_train_epoch_start(_Epochs, None)
        timer.on_train_batch_end(_Epochs, None, None, [0] * 100, 0)
        timer.on_train_epoch_end(_Epochs, None)
    assert timer.samples_per_second == pytest.approx(100.0)  # (200 samples / 2 s), not 300 / 12
    assert TrainThroughput().samples_per_second == 0.0
