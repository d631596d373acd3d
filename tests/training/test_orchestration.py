"""The README's "What you can rely on", each as a test that fails when the promise is broken.

All runs use the tiny overfitting configuration of ``orchestration_setup`` (best epoch before the
last), through the real ``mtlrec.train.run``: Hydra config, Lightning Trainer, callbacks, files.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from mtlrec import train
from mtlrec.predict import RunScorer
from mtlrec.training.results import RESULTS_FILE
from tests.training.orchestration_setup import fit, tiny_masked_data, val_history

SYNTHETIC = {"correlation": 0.5, "dim": 32, "num_train": 64, "num_val": 256, "num_test": 256, "scale": 1.0,
             "num_sines": 10, "noise_std": 0.1, "seed": 69, "loader": {"batch_size": 16}}


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("overfit")
    return out, fit(out)


# -- selection on validation only ---------------------------------------------------------------
def test_the_setting_overfits(overfit_run) -> None:
    """The premise of every test here: the best validation epoch is well before the last."""
    _, rec = overfit_run
    assert rec["epochs_trained"] == 12
    assert 2 <= rec["best_epoch"] <= 9


def test_best_epoch_is_the_argmin_of_validation(overfit_run) -> None:
    out, rec = overfit_run
    history = val_history(out)
    assert len(history) == rec["epochs_trained"]
    best = int(history["val/task1/mse"].to_numpy().argmin()) + 1
    assert rec["best_epoch"] == best == rec["best_epochs"]["task1"] == rec["best_epochs"]["task2"]
    # the reported validation metrics are those of that epoch
    row = history.iloc[best - 1]
    for task in ("task1", "task2"):
        assert rec["metrics"]["val"][task]["mse"] == pytest.approx(row[f"val/{task}/mse"], rel=1e-6)


def test_test_labels_never_influence_selection(overfit_run, tmp_path) -> None:
    """Scrambling only the test split's labels changes test metrics, nothing else."""
    _, rec = overfit_run
    data = {**SYNTHETIC, "_target_": "tests.training.orchestration_setup.altered_test_labels"}
    other = fit(tmp_path, data=data)
    assert other["best_epoch"] == rec["best_epoch"]
    assert other["metrics"]["val"] == rec["metrics"]["val"]
    assert other["train_loss_per_epoch"] == rec["train_loss_per_epoch"]
    assert other["metrics"]["test"]["task1"]["mse"] > 10 * rec["metrics"]["test"]["task1"]["mse"]


def test_the_synthetic_data_node_equals_the_default(overfit_run, tmp_path) -> None:
    """Guard for the test above: the hand-written data node is the default one (same results)."""
    _, rec = overfit_run
    same = fit(tmp_path, data={**SYNTHETIC, "_target_": "mtlrec.data.synthetic.load_synthetic"})
    assert same["metrics"] == rec["metrics"]


# -- test metrics and scoring from the best checkpoint -------------------------------------------
def _test_mse_from(module_state: dict, out: Path, rec: dict) -> dict[str, float]:
    """Test MSE per task of the architecture with the given weights, computed here."""
    scorer = RunScorer(out)
    scorer.architecture.load_state_dict(
        {k[len("architecture."):]: v for k, v in module_state.items() if k.startswith("architecture.")})
    return _scorer_test_mse(scorer, rec)


def _scorer_test_mse(scorer: RunScorer, rec: dict) -> dict[str, float]:
    from mtlrec.data.synthetic import load_synthetic

    cfg = {k: v for k, v in rec["config"]["data"].items() if k not in ("_target_", "loader")}
    test = load_synthetic(**cfg).splits["test"]
    pred = scorer.predict(test)
    return {t: float(np.mean((pred[t] - test[t].to_numpy()) ** 2)) for t in ("task1", "task2")}


def test_test_metrics_come_from_the_best_checkpoint(overfit_run) -> None:
    out, rec = overfit_run
    assert rec["checkpoint"] == "checkpoints/best.ckpt"
    best = torch.load(out / rec["checkpoint"], map_location="cpu", weights_only=False)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] + 1 == rec["best_epoch"] and last["epoch"] + 1 == rec["epochs_trained"]
    from_best = _test_mse_from(best["state_dict"], out, rec)
    from_last = _test_mse_from(last["state_dict"], out, rec)
    for task in ("task1", "task2"):
        assert rec["metrics"]["test"][task]["mse"] == pytest.approx(from_best[task], rel=1e-5)
        assert abs(from_last[task] - from_best[task]) > 1e-3  # so the check above can tell them apart


def test_run_scorer_uses_the_best_checkpoint(overfit_run) -> None:
    out, rec = overfit_run
    scored = _scorer_test_mse(RunScorer(out), rec)
    for task in ("task1", "task2"):
        assert scored[task] == pytest.approx(rec["metrics"]["test"][task]["mse"], rel=1e-5)


# -- histories -----------------------------------------------------------------------------------
def test_histories_cover_the_whole_run(overfit_run) -> None:
    """Regression: reloading the best checkpoint for validate/test replaced the histories with the
    ones saved at the best epoch (100 of 140 archived Census runs were cut short)."""
    _, rec = overfit_run
    assert rec["best_epoch"] < rec["epochs_trained"]
    assert len(rec["train_loss_per_epoch"]) == rec["epochs_trained"]
    assert len(rec["weights"]["per_epoch"]) == rec["epochs_trained"]


# -- resume and skip -----------------------------------------------------------------------------
class _Crash(L.Callback):
    """Raises at the start of epoch index ``at`` (after ``at`` complete epochs and their last.ckpt)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


class _EpochCounter(L.Callback):
    epochs = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        type(self).epochs += 1


@pytest.fixture
def instrumented(monkeypatch):
    """Adds a crash (when asked) and an epoch counter to the callbacks train.run builds."""
    plan = {"crash_at": None}
    original = train.build_callbacks

    def build(cfg, module, checkpoint_dir):
        callbacks = original(cfg, module, checkpoint_dir)
        if plan["crash_at"] is not None:
            callbacks.append(_Crash(plan["crash_at"]))
        return [*callbacks, _EpochCounter()]

    monkeypatch.setattr(train, "build_callbacks", build)
    _EpochCounter.epochs = 0
    return plan


CRASH_AT = 8  # after the best epoch: last.ckpt must be the latest epoch, not the best one


def _crash_then_rerun(out: Path, plan: dict, first: tuple[str, ...], second: tuple[str, ...],
                      at: int = CRASH_AT) -> dict:
    plan["crash_at"] = at
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(out, *first)
    assert json.loads((out / RESULTS_FILE).read_text())["status"] == "failed"
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] + 1 == at
    plan["crash_at"], _EpochCounter.epochs = None, 0
    return fit(out, *second)


def test_resume_continues_a_crashed_run(overfit_run, instrumented, tmp_path) -> None:
    _, reference = overfit_run
    rec = _crash_then_rerun(tmp_path, instrumented, (), ())
    assert reference["best_epoch"] < CRASH_AT
    assert _EpochCounter.epochs == reference["epochs_trained"] - CRASH_AT  # continued, not retrained
    assert rec["epochs_trained"] == reference["epochs_trained"]
    assert rec["best_epoch"] == reference["best_epoch"]
    assert rec["metrics"] == reference["metrics"]
    assert len(rec["train_loss_per_epoch"]) == len(reference["train_loss_per_epoch"])
    for resumed, uninterrupted in zip(rec["train_loss_per_epoch"], reference["train_loss_per_epoch"]):
        assert resumed == pytest.approx(uninterrupted)


def test_resume_refuses_another_configs_checkpoint(instrumented, tmp_path) -> None:
    rec = _crash_then_rerun(tmp_path, instrumented, (), ("optimizer.lr=0.01",))
    assert _EpochCounter.epochs == rec["epochs_trained"] == 12  # trained from scratch
    fresh = fit(tmp_path / "fresh", "optimizer.lr=0.01")
    assert rec["metrics"] == fresh["metrics"]


def test_skip_only_on_a_complete_record_of_the_same_config(overfit_run, instrumented, tmp_path) -> None:
    out, rec = overfit_run
    assert fit(out) == json.loads((out / RESULTS_FILE).read_text())
    assert _EpochCounter.epochs == 0  # skipped: same config, complete
    record = json.loads((out / RESULTS_FILE).read_text())
    for status, hash_ in (("failed", record["config_hash"]), ("complete", "0" * 16)):
        other = tmp_path / f"{status}-{hash_}"
        other.mkdir()
        (other / RESULTS_FILE).write_text(json.dumps({**record, "status": status, "config_hash": hash_}))
        _EpochCounter.epochs = 0
        again = fit(other)
        assert _EpochCounter.epochs == 12 and again["status"] == "complete"
        assert again["metrics"] == rec["metrics"]


# -- what the weighting receives in a real fit ----------------------------------------------------
def test_per_epoch_hook_reaches_the_weighting(tmp_path) -> None:
    """DWA keeps equal weights for two epochs, then adapts to the loss ratios."""
    rec = fit(tmp_path, "weighting=dwa", "trainer.max_epochs=4")
    per_epoch = rec["weights"]["per_epoch"]
    assert [w == {"task1": 1.0, "task2": 1.0} for w in per_epoch] == [True, True, False, False]
    assert sum(per_epoch[2].values()) == pytest.approx(2.0)
    assert abs(per_epoch[2]["task1"] - 1.0) > 1e-3


def test_dwa_weights_follow_the_fits_own_epoch_losses(tmp_path) -> None:
    """Epoch e's weights (e >= 3) are DWA's formula on the mean training losses of epochs e-2 and
    e-1 of this fit (T = 2)."""
    import math

    rec = fit(tmp_path, "weighting=dwa", "trainer.max_epochs=5")
    losses, weights = rec["train_loss_per_epoch"], rec["weights"]["per_epoch"]
    for epoch in range(3, 6):
        before, last = losses[epoch - 3], losses[epoch - 2]
        exps = {t: math.exp(last[t] / before[t] / 2.0) for t in last}
        expected = {t: 2 * e / sum(exps.values()) for t, e in exps.items()}
        assert weights[epoch - 1] == pytest.approx(expected, rel=1e-6), epoch


@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm", "dwa"])
def test_learned_weighting_state_survives_resume(weighting, instrumented, tmp_path) -> None:
    """A weighting's own state (learned weights, their optimizer, L(0), loss history) travels in
    last.ckpt: the resumed run equals the uninterrupted one."""
    reference = fit(tmp_path / "reference", f"weighting={weighting}")
    rec = _crash_then_rerun(tmp_path / "resumed", instrumented, (f"weighting={weighting}",), (f"weighting={weighting}",))
    assert _EpochCounter.epochs == reference["epochs_trained"] - CRASH_AT
    assert rec["metrics"] == reference["metrics"]
    for resumed, uninterrupted in zip(rec["weights"]["per_epoch"], reference["weights"]["per_epoch"], strict=True):
        assert resumed == pytest.approx(uninterrupted)


def test_labelled_counts_reach_data_volume_on_masked_data(tmp_path) -> None:
    data = {"_target_": "tests.training.orchestration_setup.tiny_masked_data", "loader": {"batch_size": 64}}
    rec = fit(tmp_path, "weighting=data_volume", "trainer.max_epochs=1", data=data)
    train_split = tiny_masked_data().splits["train"]
    counts = {"ctr": len(train_split), "cvr": int(train_split["click"].sum()), "kind": len(train_split),
              "spend": int(train_split["click"].sum())}
    assert counts["cvr"] < counts["ctr"]  # the masks make the volumes unequal
    total = sum(counts.values())
    expected = {t: 4 * n / total for t, n in counts.items()}
    assert rec["weights"]["final"] == pytest.approx(expected)


def test_without_a_best_checkpoint_the_record_says_so(tmp_path) -> None:
    """No callback keeping the main task's best: the final weights are evaluated and the record
    names no checkpoint (never last.ckpt presented as the best one)."""
    rec = fit(tmp_path, "~callbacks.model_checkpoint", "trainer.max_epochs=3")
    assert rec["checkpoint"] is None
    assert rec["best_epoch"] is None
