"""Independent networks (``single_task``) are selected per task, as separate runs would be: each
task's network is early-stopped and checkpointed on its *own* validation metric, and its reported
validation/test metrics come from its own best epoch (not the main task's)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mtlrec.predict import RunScorer
from mtlrec.training.selection import CHECKPOINT_NAME, TaskwiseSelection
from tests.training.orchestration_setup import fit, val_history
from tests.training.test_orchestration import _crash_then_rerun, _scorer_test_mse, instrumented  # noqa: F401

PATIENCE = 3


def separate_run(values: list[float], patience: int | None) -> tuple[int, float, int]:
    """(best epoch, best value, last epoch) of one task's own early-stopped run on MSE (min)."""
    best, best_epoch, wait = float("inf"), 0, 0
    for epoch, value in enumerate(values, start=1):
        if value < best:
            best, best_epoch, wait = value, epoch, 0
        else:
            wait += 1
            if patience is not None and wait >= patience:
                return best_epoch, best, epoch
    return best_epoch, best, len(values)


@pytest.fixture(scope="module")
def single_task_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("single_task")
    return out, fit(out, "arch=single_task", f"callbacks.early_stopping.patience={PATIENCE}")


def test_each_task_is_reported_at_its_own_best_epoch(single_task_run) -> None:
    out, rec = single_task_run
    assert rec["selection"]["per_task"] is True
    assert rec["checkpoint"] == f"checkpoints/{CHECKPOINT_NAME}"
    history = val_history(out)
    assert len(history) == rec["epochs_trained"] == len(rec["train_loss_per_epoch"])
    stops = []
    for task in ("task1", "task2"):
        values = history[f"val/{task}/mse"].tolist()
        best_epoch, best, stop = separate_run(values, PATIENCE)
        stops.append(stop)
        assert rec["best_epochs"][task] == best_epoch
        assert rec["metrics"]["val"][task]["mse"] == pytest.approx(best, rel=1e-6)
    assert rec["epochs_trained"] == max(stops)  # the run ends when every task has stopped
    assert rec["best_epoch"] == rec["best_epochs"]["task1"]  # the main task's


def test_the_auxiliary_task_is_not_reported_at_the_main_tasks_epoch(single_task_run) -> None:
    """What the old selection did: every network at the main task's best epoch."""
    out, rec = single_task_run
    main_epoch, aux_epoch = rec["best_epochs"]["task1"], rec["best_epochs"]["task2"]
    assert main_epoch != aux_epoch
    at_main_epoch = val_history(out)["val/task2/mse"].iloc[main_epoch - 1]
    assert rec["metrics"]["val"]["task2"]["mse"] < at_main_epoch - 1e-3


def test_test_metrics_and_scoring_come_from_each_tasks_best_weights(single_task_run) -> None:
    out, rec = single_task_run
    composite = torch.load(out / rec["checkpoint"], map_location="cpu", weights_only=False)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert composite["mtlrec_best_epochs"] == rec["best_epochs"]
    for task in ("task1", "task2"):  # both stopped before the last epoch, so their best weights differ
        keys = [k for k in composite["state_dict"] if k.startswith(f"architecture.nets.{task}.")]
        assert any(not torch.equal(composite["state_dict"][k], last["state_dict"][k]) for k in keys)
    scored = _scorer_test_mse(RunScorer(out), rec)
    for task in ("task1", "task2"):
        assert scored[task] == pytest.approx(rec["metrics"]["test"][task]["mse"], rel=1e-5)


def test_without_early_stopping_each_task_gets_its_best_of_all_epochs(tmp_path) -> None:
    rec = fit(tmp_path, "arch=single_task")  # patience 12 = max_epochs: no task stops early
    history = val_history(tmp_path)
    for task in ("task1", "task2"):
        assert rec["metrics"]["val"][task]["mse"] == pytest.approx(history[f"val/{task}/mse"].min(), rel=1e-6)
        assert rec["best_epochs"][task] == int(history[f"val/{task}/mse"].to_numpy().argmin()) + 1


def test_per_task_selection_resumes_with_its_state(single_task_run, instrumented, tmp_path) -> None:
    _, reference = single_task_run
    overrides = ("arch=single_task", f"callbacks.early_stopping.patience={PATIENCE}")
    assert reference["best_epochs"]["task1"] < 4 < reference["epochs_trained"]  # the crash comes after task1's best
    rec = _crash_then_rerun(tmp_path, instrumented, overrides, overrides, at=4)
    assert rec["epochs_trained"] == reference["epochs_trained"]  # each task stopped where it did
    assert rec["best_epochs"] == reference["best_epochs"]
    assert rec["metrics"] == reference["metrics"]


# -- the callback on scripted validation curves (a real Trainer, a two-parameter module) ----------
class _Scripted(L.LightningModule):
    """Two one-number "networks"; after each epoch each holds that epoch's number, and validation
    logs the scripted value of each task for that epoch."""

    def __init__(self, curves: dict[str, list[float]]):
        super().__init__()
        self.curves = curves
        self.nets = torch.nn.ParameterDict({t: torch.nn.Parameter(torch.zeros(1)) for t in curves})

    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            for p in self.nets.values():
                p.fill_(self.current_epoch + 1)
        return sum(p.sum() for p in self.nets.values()) * 0.0

    def validation_step(self, batch, batch_idx):
        for task, curve in self.curves.items():
            self.log(f"val/{task}/mse", curve[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit_scripted(curves: dict[str, list[float]], tmp_path: Path, **options) -> tuple[L.Trainer, TaskwiseSelection]:
    """A real Trainer fitting ``_Scripted(curves)`` with per-task selection (min MSE) and ``options``."""
    selection = TaskwiseSelection({t: (f"val/{t}/mse", "min") for t in curves},
                                  {t: [f"nets.{t}"] for t in curves}, tmp_path, **options)
    loader = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)
    trainer = L.Trainer(max_epochs=len(next(iter(curves.values()))), callbacks=[selection], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(_Scripted(curves), loader, loader)
    return trainer, selection


def test_a_stopped_task_keeps_its_choice_and_the_run_ends_when_all_have_stopped(tmp_path) -> None:
    curves = {"a": [1.0, 0.5, 0.625, 0.75, 0.125, 0.125, 0.125, 0.125], "b": [1.0, 0.875, 0.75, 0.875, 0.625, 0.75, 0.875, 0.5]}
    # a: best 2, stops at 4 (its later 0.125 would be a separate run's future: never seen);
    # b: best 5, stops at 7 -> the run ends after epoch 7, before b's 0.5 at epoch 8
    trainer, selection = _fit_scripted(curves, tmp_path, patience=2)
    assert trainer.current_epoch == 7
    assert selection.summary() == {"a": {"best_epoch": 2, "best_score": 0.5, "stopped_epoch": 4},
                                   "b": {"best_epoch": 5, "best_score": 0.625, "stopped_epoch": 7}}
    state = torch.load(selection.best_model_path, weights_only=False)["state_dict"]
    assert (float(state["nets.a"]), float(state["nets.b"])) == (2.0, 5.0)  # each from its own best epoch


def test_min_delta_delays_stopping_but_never_the_choice_of_the_best_epoch(tmp_path) -> None:
    """As separate runs: ModelCheckpoint keeps the strictly best epoch; only EarlyStopping's count
    of epochs without improvement uses min_delta."""
    curves = {"a": [1.0, 0.5, 0.484375, 0.46875, 0.453125, 0.4375], "b": [1.0] * 6}
    # a improves by 1/64 per epoch after epoch 2, 3/64 in all by epoch 5: below min_delta 1/16 ->
    # stops at 2 + 3 = 5, yet its best is epoch 5 (0.453125), not epoch 2 (the last significant one)
    _, selection = _fit_scripted(curves, tmp_path, patience=3, min_delta=0.0625)
    assert selection.summary()["a"] == {"best_epoch": 5, "best_score": 0.453125, "stopped_epoch": 5}
    assert selection.summary()["b"] == {"best_epoch": 1, "best_score": 1.0, "stopped_epoch": 4}


def test_unsupported_early_stopping_options_are_refused(tmp_path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    with pytest.raises(ValueError, match=r"\['stopping_threshold'\] cannot be applied per task"):
        TaskwiseSelection.replacing(EarlyStopping("val/a/mse", stopping_threshold=0.1),
                                    monitors={"a": ("val/a/mse", "min")}, state_keys={"a": []}, dirpath=tmp_path)
