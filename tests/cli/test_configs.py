"""The shipped Hydra configs compose, and experiment files really override the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtlrec.build import build_architecture, build_datamodule
from mtlrec.train import CONFIG_DIR
from tests.conftest import sample_overrides, tasks_named_by_arch

ARCHS = sorted(p.stem for p in (Path(CONFIG_DIR) / "arch").glob("*.yaml"))


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_every_arch_config_builds_on_the_synthetic_data() -> None:
    assert {"single_task", "shared_bottom", "cross_stitch", "omoe", "mmoe", "cgc", "ple"} <= set(ARCHS)
    cfg = _compose("data.num_train=64", "data.num_val=16", "data.num_test=16", "data.dim=4")
    dm = build_datamodule(cfg)
    for arch in ARCHS:
        if tasks_named_by_arch(arch) - set(dm.schema.task_names):
            continue  # ESMM/AITM name click-to-conversion tasks: built on the conversion samples below
        model = build_architecture(_compose(f"arch={arch}"), dm.schema, dm.preprocessor)
        assert set(model(dm.tables["train"][slice(0, 8)]).logits) == {"task1", "task2"}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_config_builds_on_the_conversion_data(arch) -> None:
    cfg = _compose(*sample_overrides("aliccp"), f"arch={arch}")
    dm = build_datamodule(cfg)
    model = build_architecture(cfg, dm.schema, dm.preprocessor)
    assert set(model(dm.tables["train"][slice(0, 8)]).logits) == {"click", "cvr", "ctcvr"}


@pytest.mark.parametrize("experiment", ["census_mmoe_table", "synthetic_correlation"])
def test_experiment_sets_its_own_sweep_folder_and_grid(experiment) -> None:
    cfg = _compose(f"experiment={experiment}", hydra=True)
    assert cfg.hydra.sweep.dir == f"multirun/{experiment}"
    params = cfg.hydra.sweeper.params
    assert "arch" in params and (params.get("seed") == "range(10)" or str(params.get("seeds")) == "10")  # 10 seeds


def test_census_experiment_protocol() -> None:
    cfg = _compose("experiment=census_mmoe_table")
    assert cfg.data._target_.endswith("load_census_income")
    assert (cfg.data.loader.batch_size, cfg.optimizer.lr, cfg.callbacks.early_stopping.patience) == (4096, 0.004, 5)


def test_synthetic_experiment_matches_the_mmoe_paper_sizes() -> None:
    mmoe = _compose("experiment=synthetic_correlation", "arch=mmoe")
    assert (mmoe.data.dim, mmoe.arch.num_experts, list(mmoe.arch.expert_units), list(mmoe.arch.tower_units)) == (
        100, 8, [16], [8])
    assert list(_compose("experiment=synthetic_correlation", "arch=shared_bottom").arch.bottom_units) == [113]


@pytest.mark.sweep
def test_optuna_search_config_composes() -> None:
    cfg = _compose("hparams_search=optuna", hydra=True)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.max_failure_rate > 0
    assert "optimizer.lr" in cfg.hydra.sweeper.params


@pytest.mark.sweep
@pytest.mark.parametrize("launcher", sorted(p.stem for p in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")))
def test_launcher_configs_compose(launcher) -> None:
    cfg = _compose(f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
