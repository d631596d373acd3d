"""The training step never waits for the device: no ``.item()``/``.tolist()``, no ``bool(tensor)``, no
boolean-mask indexing (it counts rows on the host), no new tensor from Python data (a host-to-device
copy) — for every architecture and every loss-based weighting and GradNorm, masked tasks included.

On a CPU these calls cost little, so they are counted, through a ``TorchFunctionMode`` around the
real ``training_step`` of a real Lightning fit, from the third step on (Adam's state, GradNorm's
``L_i(0)`` and the cached index tensors are made in the first ones; the non-finite guard and the
logger read the device every 50 steps, and these steps are not among those). The same check on a
GPU, with ``torch.cuda.set_sync_debug_mode("error")``, is ``test_no_sync_on_a_gpu``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.conftest import build_in_process, sample_overrides, tasks_named_by_arch

CONF = Path(__file__).resolve().parents[2] / "conf"
ARCHS = sorted(p.stem for p in (CONF / "arch").glob("*.yaml"))
# the weightings that can avoid reading the device; the aggregators' solvers run on the host
# (TorchJD solves a small QP over the Gramian there), which is one sync per step by design
NO_SYNC_WEIGHTINGS = ("fixed", "data_volume", "dwa", "uncertainty", "gradnorm")
SYNCING = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu", "nonzero",
           "masked_select", "tensor", "as_tensor"}


class HostReads(TorchFunctionMode):
    """Records the torch calls that would wait for a device."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        # torch's optimizers keep their step counters on the host (unless capturable): their
        # .item() never waits for a device
        if f"torch{os.sep}optim{os.sep}" in sys._getframe(1).f_code.co_filename:
            pass
        elif name in SYNCING:
            self.seen.append(name)
        elif name == "__getitem__" and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in
                                           (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.seen.append("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


def _fit_watching(module, datamodule, first_watched: int = 2, steps: int = 6, mode_factory=HostReads) -> list:
    step = module.training_step
    seen: list = []

    def watched(batch, batch_idx):
        if batch_idx < first_watched:
            return step(batch, batch_idx)
        with mode_factory() as mode:
            out = step(batch, batch_idx)
        seen.extend(getattr(mode, "seen", []))
        return out

    module.training_step = watched
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="auto", devices=1)
    trainer.fit(module, datamodule=datamodule)
    return seen


def _overrides(arch: str) -> list[str]:
    if tasks_named_by_arch(arch):  # ESMM, AITM: click -> conversion, with the conversion masked
        return [*sample_overrides("aliccp"), f"arch={arch}", "data.loader.batch_size=16"]
    return [f"arch={arch}", "data.num_train=600", "data.num_val=100", "data.num_test=100",
            "data.loader.batch_size=64"]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_training_step_reads_nothing_from_the_device(arch) -> None:
    module, datamodule = build_in_process(_overrides(arch))
    assert _fit_watching(module, datamodule) == []


@pytest.mark.parametrize("weighting", NO_SYNC_WEIGHTINGS)
def test_no_weighting_reads_the_device_on_masked_tasks(weighting) -> None:
    module, datamodule = build_in_process([*sample_overrides("aliccp"), "arch=mmoe", f"weighting={weighting}",
                                           "data.loader.batch_size=16"])
    datamodule.setup()
    assert any(t in datamodule.tables["train"].masks for t in module.trained_tasks)  # a task on its own rows
    assert _fit_watching(module, datamodule) == []


def test_the_spy_sees_a_host_read() -> None:
    """The check can fail: the step of a module that reads its loss on the host is caught."""
    module, datamodule = build_in_process(_overrides("shared_bottom"))
    losses = module.task_losses

    def reading(outputs, batch):
        values = losses(outputs, batch)
        _ = [float(v) for v in values.values()]
        mask = batch.labels[module.trained_tasks[0]] > 0
        _ = batch.labels[module.trained_tasks[0]][mask]
        return values

    module.task_losses = reading
    seen = _fit_watching(module, datamodule)
    assert "__float__" in seen and "boolean-mask indexing" in seen


class _SyncDebug:
    """``torch.cuda.set_sync_debug_mode("error")`` for the duration: a sync raises."""

    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode(0)
        return False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the sync debug mode is CUDA's)")
@pytest.mark.parametrize("weighting", NO_SYNC_WEIGHTINGS)
def test_no_sync_on_a_gpu(weighting) -> None:
    module, datamodule = build_in_process([*sample_overrides("aliccp"), "arch=mmoe", f"weighting={weighting}",
                                           "data.loader.batch_size=16"])
    _fit_watching(module, datamodule, mode_factory=_SyncDebug)  # raises at the first synchronising call
    assert datamodule.table_device is not None and datamodule.table_device.type == "cuda"  # they fit: moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tables_left_on_the_host_give_page_locked_batches() -> None:
    module, datamodule = build_in_process([*sample_overrides("aliccp"), "arch=mmoe", "data.loader.on_device=false",
                                           "data.loader.batch_size=16"])
    _fit_watching(module, datamodule, first_watched=10**9)
    assert datamodule.table_device is None
    batch = next(iter(datamodule.train_dataloader()))
    assert all(t.is_pinned() for t in batch.features.values())
