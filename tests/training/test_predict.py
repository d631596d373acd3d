"""A finished run scores new data: same predictions as the trained module, OOV-safe, no labels needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlrec import train
from mtlrec.data.datamodule import PREPROCESSOR_FILE, SCHEMA_FILE
from mtlrec.predict import RunScorer
from mtlrec.training.objectives import objective_for
from tests.conftest import train_in_process


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    overrides = ["data.num_train=600", "data.num_val=100", "data.num_test=100", "data.dim=6",
                 "trainer.max_epochs=2", "logger=none"]
    record, cfg = train_in_process(run_dir, overrides)
    return run_dir, record, cfg


def test_run_saves_what_scoring_needs(finished_run) -> None:
    run_dir, record, _ = finished_run
    assert (run_dir / SCHEMA_FILE).exists() and (run_dir / PREPROCESSOR_FILE).exists()
    assert (run_dir / record["checkpoint"]).exists()


def test_scores_equal_the_best_checkpoints_outputs_on_test_data(finished_run) -> None:
    run_dir, record, cfg = finished_run
    datamodule = train.build_datamodule(cfg)
    frame = datamodule.raw.splits["test"].drop(columns=["task1", "task2"])  # labels are not needed
    scores = RunScorer(run_dir).predict(frame, batch_size=37)
    module = train.build_module(cfg, datamodule)
    state = torch.load(run_dir / record["checkpoint"], weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    with torch.no_grad():
        logits = module(datamodule.tables["test"][slice(0, None)]).logits
    for task in ("task1", "task2"):
        assert scores[task].shape == (100,)
        np.testing.assert_allclose(scores[task], objective_for(datamodule.schema.task(task)).predict(logits[task]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    mse = float(np.mean((scores["task1"] - datamodule.raw.splits["test"]["task1"].to_numpy()) ** 2))
    assert mse == pytest.approx(record["metrics"]["test"]["task1"]["mse"], rel=1e-4)


def test_missing_run_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no complete results.json"):
        RunScorer(tmp_path)


def test_unknown_loader_option_names_the_option() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["+data.loader.batchsize=3"])
    with pytest.raises(ValueError, match=r"data.loader: unknown option\(s\) \['batchsize'\]"):
        train.build_datamodule(cfg)
