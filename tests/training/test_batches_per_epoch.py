"""``data.loader.batches_per_epoch``: an epoch of a fixed number of optimizer steps (few-shot
protocols), through the real training path, with the default's runs keeping their hash."""

from __future__ import annotations

from pathlib import Path

import torch

from mtlrec.training.results import config_hash
from tests.conftest import train_in_process

SMALL = ["data=synthetic", "data.num_train=100", "data.num_val=256", "data.num_test=256", "data.loader.batch_size=64",
         "trainer.max_epochs=3", "arch=shared_bottom", "logger=none", "callbacks.early_stopping.patience=5"]


def _steps(run: Path) -> tuple[int, int]:
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return last["global_step"], last["epoch"]


def test_an_epoch_is_the_given_number_of_steps(tmp_path: Path) -> None:
    plain, _ = train_in_process(tmp_path / "plain", SMALL)
    fixed, _ = train_in_process(tmp_path / "fixed", [*SMALL, "data.loader.batches_per_epoch=5"])
    assert plain["status"] == fixed["status"] == "complete"
    assert _steps(tmp_path / "plain")[0] == 3 * 2  # 100 rows at batch 64: 2 steps an epoch
    assert _steps(tmp_path / "fixed")[0] == 3 * 5
    assert fixed["epochs_trained"] == plain["epochs_trained"] == 3
    assert fixed["config_hash"] != plain["config_hash"]
    # the option left at null is not in the hash: runs published before it keep theirs
    loader = {k: v for k, v in plain["config"]["data"]["loader"].items() if k != "batches_per_epoch"}
    before = {**plain["config"], "data": {**plain["config"]["data"], "loader": loader}}
    assert config_hash(before) == plain["config_hash"]


def test_a_bad_value_is_one_line_naming_the_option(tmp_path: Path) -> None:
    import pytest

    from mtlrec.train import BadInputError

    with pytest.raises((BadInputError, ValueError), match=r"data.loader.batches_per_epoch must be a whole number"):
        train_in_process(tmp_path / "bad", [*SMALL, "data.loader.batches_per_epoch=0"])
    assert not (tmp_path / "bad" / "results.json").exists()
