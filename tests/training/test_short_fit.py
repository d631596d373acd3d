"""Short real trainings: every architecture learns, throughput is counted, and seeded runs of the
real pipeline (``mtlrec.train.run``) are reproducible."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mtlrec import train
from mtlrec.data.datamodule import TabularDataModule
from mtlrec.training.module import MultiTaskModule
from mtlrec.training.results import RESULTS_FILE, read_results
from mtlrec.training.timing import TrainThroughput
from mtlrec.weighting.fixed import FixedWeighting
from tests.conftest import compose_task_config

EPOCHS = 4
NUM_TRAIN = 2000


def _trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )


def test_short_training_lowers_the_loss(arch_name, build_arch, tiny_raw_factory) -> None:
    L.seed_everything(0, verbose=False)
    dm = TabularDataModule(tiny_raw_factory(num_train=NUM_TRAIN, num_val=200, num_test=50), batch_size=128,
                           eval_batch_size=1000, seed=0)
    dm.setup()
    module = MultiTaskModule(
        dm.schema, build_arch(arch_name, preprocessor=dm.preprocessor), FixedWeighting(),
        optimizer=partial(torch.optim.Adam, lr=1e-2), labelled_counts=dm.labelled_counts(),
    )
    throughput = TrainThroughput()
    trainer = _trainer(EPOCHS, [throughput])
    trainer.fit(module, datamodule=dm)
    history = module.loss_history
    assert len(history) == EPOCHS and len(module.weight_history) == EPOCHS
    assert module.weight_history[-1] == {"ctr": 1.0, "cvr": 1.0, "kind": 1.0, "spend": 1.0}
    first, last = sum(history[0].values()), sum(history[-1].values())
    totals = [round(sum(h.values()), 3) for h in history]
    assert last < 0.7 * first, f"{arch_name}: epoch losses {totals}"
    assert all(b < a for a, b in zip(totals, totals[1:])), f"{arch_name}: epoch losses {totals}"
    for task in ("ctr", "kind", "spend"):
        assert history[-1][task] < history[0][task], (arch_name, task, history)
    # validation ran on the main task's selection metric and is better than chance
    assert trainer.callback_metrics["val/ctr/auc"] > 0.9
    assert set(trainer.callback_metrics) >= {"val/kind/accuracy", "val/spend/mse@click", "val/cvr/auc@click"}
    # throughput counts training samples only
    assert throughput.samples == EPOCHS * NUM_TRAIN
    assert throughput.seconds > 0 and throughput.samples_per_second > 0


# -- the real pipeline, in-process --------------------------------------------------------------
OVERRIDES = [
    "data.num_train=1000", "data.num_val=300", "data.num_test=300", "data.dim=10",
    "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=none", "seed=3",
]


def _compose(output_dir) -> DictConfig:
    return compose_task_config(output_dir, OVERRIDES)


@pytest.fixture(scope="module")
def two_seeded_runs(tmp_path_factory):
    """The same config (seed 3) trained twice, into two folders."""
    records = []
    try:
        for name in ("first", "second"):
            out = tmp_path_factory.mktemp(name)
            records.append((out, train.run(_compose(out), out, OVERRIDES)))
    finally:
        HydraConfig.instance().cfg = None
    return records


def test_seeded_runs_are_reproducible(two_seeded_runs) -> None:
    (dir_a, a), (dir_b, b) = two_seeded_runs
    assert a["status"] == b["status"] == "complete"
    assert a["metrics"]["val"] == b["metrics"]["val"]
    assert a["metrics"]["test"] == b["metrics"]["test"]
    assert a["train_loss_per_epoch"] == b["train_loss_per_epoch"]
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_trained"] == b["epochs_trained"] == 2
    assert read_results(dir_a) == a and read_results(dir_b) == b
    assert a["seed"] == 3 and a["overrides"] == OVERRIDES
    assert set(a["metrics"]["val"]) == {"task1", "task2"} and a["selection"] == {"monitor": "val/task1/mse", "mode": "min", "per_task": False}
    assert (dir_a / "preprocessor.json").exists() and (dir_a / RESULTS_FILE).exists()


def test_config_hash_does_not_depend_on_the_run_folder(two_seeded_runs) -> None:
    (_, a), (_, b) = two_seeded_runs
    assert a["config_hash"] == b["config_hash"]


def test_different_seed_gives_different_metrics(two_seeded_runs, tmp_path) -> None:
    (_, a), _ = two_seeded_runs
    try:
        cfg = _compose(tmp_path)
        with open_dict(cfg):
            cfg.seed = 4
            cfg.data.seed = 4
        c = train.run(cfg, tmp_path, OVERRIDES)
    finally:
        HydraConfig.instance().cfg = None
    assert c["seed"] == 4
    assert c["metrics"]["val"] != a["metrics"]["val"]
