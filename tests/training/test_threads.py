"""``torch_threads=auto`` shares the cores among the jobs a joblib launcher runs at once."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from mtlrec.train import CONFIG_DIR, BadInputError, auto_threads, set_threads

CORES = len(os.sched_getaffinity(0))


@pytest.fixture
def hydra_job():
    """The HydraConfig of a composed job, in run or multirun mode with the given launcher (restored afterwards)."""
    def set_(mode: RunMode, launcher: dict) -> None:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = mode
            cfg.hydra.launcher = OmegaConf.create(launcher)
        HydraConfig.instance().set_config(cfg)
    before = torch.get_num_threads()
    yield set_
    HydraConfig.instance().cfg = None
    torch.set_num_threads(before)


@pytest.mark.parametrize(("n_jobs", "expected"), [(1, CORES), (2, max(1, CORES // 2)), (-1, 1), (10 * CORES, 1)])
def test_auto_shares_the_cores_among_the_launchers_jobs(hydra_job, n_jobs, expected) -> None:
    hydra_job(RunMode.MULTIRUN, {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": n_jobs})
    assert auto_threads() == expected
    set_threads("auto")
    assert torch.get_num_threads() == expected


def test_auto_takes_every_core_in_a_single_run_and_a_sequential_sweep(hydra_job) -> None:
    hydra_job(RunMode.RUN, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert auto_threads() == CORES
    hydra_job(RunMode.MULTIRUN, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert auto_threads() == CORES


def test_a_number_is_taken_and_anything_else_refused_in_one_line(hydra_job) -> None:
    set_threads(1)
    assert torch.get_num_threads() == 1
    with pytest.raises(BadInputError, match="torch_threads='many': give a number of threads, auto or null"):
        set_threads("many")


def test_no_nvml_lookup_per_step_without_a_gpu(monkeypatch, tmp_path) -> None:
    """Lightning's NVML-based CUDA check costs a failed dlopen on every Adam step on a machine
    without a GPU; a run there drops it (and keeps it where a GPU is, to protect forks)."""
    import lightning  # noqa: F401  (it sets the variable on import)

    from mtlrec.train import NVML_CHECK, drop_nvml_check_without_gpu

    monkeypatch.setenv(NVML_CHECK, "1")
    drop_nvml_check_without_gpu()
    assert (os.environ.get(NVML_CHECK) == "1") == torch.cuda.is_available()
    calls = []  # is_available() asks device_count() on the NVML path only (cached or not)
    count = torch.cuda.device_count
    monkeypatch.setattr(torch.cuda, "device_count", lambda: calls.append(1) or count())
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones(3)
    optimizer.step()
    assert bool(calls) == torch.cuda.is_available()
