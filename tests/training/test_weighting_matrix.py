"""Every weighting config × every architecture trains a few real Lightning steps with finite losses.

This is the orthogonality promise: no weighting special-cases an architecture and vice versa.
The tiny schema mixes binary, masked binary, multiclass and masked regression tasks.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.train import CONFIG_DIR
from mtlrec.training.module import MultiTaskModule
from tests.conftest import ARCH_NAMES

WEIGHTING_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "weighting").glob("*.yaml"))


def test_every_weighting_config_is_covered() -> None:
    expected = {"fixed", "data_volume", "uncertainty", "gradnorm", "dwa", "pcgrad", "mgda", "cagrad", "upgrad", "nashmtl"}
    assert expected <= set(WEIGHTING_CONFIGS)


@pytest.fixture(scope="module")
def datamodule() -> TabularDataModule:
    from tests.conftest import make_tiny_raw

    dm = TabularDataModule(make_tiny_raw(num_train=384, num_val=64, num_test=64), batch_size=64, seed=0)
    dm.setup()
    return dm


@pytest.mark.parametrize("weighting_name", WEIGHTING_CONFIGS)
@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_weighting_trains_with_architecture(arch_name, weighting_name, build_arch, datamodule) -> None:
    L.seed_everything(0, verbose=False)
    weighting = instantiate(OmegaConf.load(Path(CONFIG_DIR) / "weighting" / f"{weighting_name}.yaml"), _convert_="all")
    module = MultiTaskModule(
        datamodule.schema,
        build_arch(arch_name, preprocessor=datamodule.preprocessor),
        weighting,
        labelled_counts=datamodule.labelled_counts(),
    )
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    with pytest.warns(UserWarning) if (arch_name == "single_task" and weighting_name == "gradnorm") else _nothing():
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 6
    assert len(module.loss_history) == 2
    for epoch in module.loss_history:
        assert set(epoch) == set(datamodule.schema.task_names)
        assert all(math.isfinite(v) for v in epoch.values()), epoch
    assert all(torch.isfinite(p).all() for p in module.parameters())
    weights = module.weighting.weights()
    assert set(weights) == set(datamodule.schema.task_names)
    assert all(math.isfinite(w) and w >= 0 for w in weights.values()), weights


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
