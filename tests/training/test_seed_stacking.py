"""``seeds=K``: K seeds trained as one stacked model must give what K runs of their own give.

Each architecture of ``conf/arch`` that trains on the synthetic data is trained twice: seeds 0 and
1 stacked, and each seed alone; every seed's record must match its own run's (same config hash,
best epochs, epochs trained, metrics within float noise: the stacked step's batched matmuls sum
in another order). Early stopping is exercised: the settings make the seeds stop at different
epochs (asserted), so a seed that stopped must keep its best weights while the other trains on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlrec.report.archive import archive
from mtlrec.report.collect import collect, find_run_dirs
from mtlrec.train import CONFIG_DIR, BadInputError
from mtlrec.training.guard import NonFiniteError
from mtlrec.training.stacked import StackedSeedsModule
from tests.conftest import sample_overrides, tasks_named_by_arch, train_in_process

# small synthetic data with a fixed data seed (by default it follows the run seed, which is refused);
# a high learning rate and patience 1 so that the seeds stop early, at different epochs
DATA = ["data.seed=0", "data.num_train=1000", "data.num_val=1000", "data.num_test=1000", "data.dim=20",
        "optimizer.lr=0.05", "trainer.max_epochs=6", "callbacks.early_stopping.patience=1", "logger=none"]
ARCHS = sorted(p.stem for p in (Path(CONFIG_DIR) / "arch").glob("*.yaml") if not tasks_named_by_arch(p.stem))
SEEDS = (0, 1)


def _read(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_stacked_seeds_equal_their_own_runs(tmp_path, arch) -> None:
    stacked, _ = train_in_process(tmp_path / "stack", [*DATA, f"arch={arch}", "seeds=2"])
    assert [r["seed"] for r in stacked] == list(SEEDS)
    for seed, record in zip(SEEDS, stacked):
        own, _ = train_in_process(tmp_path / f"own{seed}", [*DATA, f"arch={arch}", f"seed={seed}"])
        assert record == _read(tmp_path / "stack" / f"seed={seed}")
        assert record["config_hash"] == own["config_hash"]  # the same run, trained in a stack
        assert record["config"]["seed"] == seed and record["config"]["seeds"] == 1
        assert record["overrides"] == [*DATA, f"arch={arch}", f"seed={seed}"]
        assert record["best_epochs"] == own["best_epochs"]
        assert record["epochs_trained"] == own["epochs_trained"]
        assert len(record["train_loss_per_epoch"]) == own["epochs_trained"]
        for split in ("val", "test"):
            for task, metrics in own["metrics"][split].items():
                for name, value in metrics.items():
                    assert record["metrics"][split][task][name] == pytest.approx(value, rel=2e-3), (split, task)
        for got, want in zip(record["train_loss_per_epoch"], own["train_loss_per_epoch"]):
            assert got == pytest.approx(want, rel=2e-3)
    assert len({r["epochs_trained"] for r in stacked}) > 1 or arch != "mmoe", "the seeds should stop apart"


@pytest.mark.parametrize("arch", ["esmm", "aitm", "mmoe"])
def test_click_to_conversion_stacks_equal_their_own_runs(tmp_path, arch) -> None:
    """Masked tasks (CVR on clicks), a derived output (ESMM's pCVR) and an auxiliary loss term
    (AITM's calibrator) under the stack, on the Ali-CCP sample."""
    settings = [*sample_overrides("aliccp"), f"arch={arch}", "data.loader.batch_size=16", "trainer.max_epochs=3",
                "logger=none"]
    stacked, _ = train_in_process(tmp_path / "stack", [*settings, "seeds=2"])
    for seed, record in zip(SEEDS, stacked):
        own, _ = train_in_process(tmp_path / f"own{seed}", [*settings, f"seed={seed}"])
        assert record["config_hash"] == own["config_hash"] and record["best_epochs"] == own["best_epochs"]
        for split in ("val", "test"):
            assert record["metrics"][split].keys() == own["metrics"][split].keys()
            for task, metrics in own["metrics"][split].items():
                for name, value in metrics.items():
                    # AUC on a few dozen rows: float noise can swap two tied scores (one pair in ~300)
                    tolerance = {"abs": 0.01} if name.startswith("auc") else {"rel": 2e-3, "abs": 1e-5}
                    assert record["metrics"][split][task][name] == pytest.approx(value, **tolerance), (task, name)
        for got, want in zip(record["train_loss_per_epoch"], own["train_loss_per_epoch"]):
            assert got == pytest.approx(want, rel=2e-3)


def test_a_finished_stack_is_skipped_and_a_longer_one_trains_only_the_new_seed(tmp_path) -> None:
    out = tmp_path / "run"
    train_in_process(out, [*DATA, "seeds=2"])
    written = {s: (out / f"seed={s}" / "results.json").stat().st_mtime_ns for s in SEEDS}
    again, _ = train_in_process(out, [*DATA, "seeds=2"])
    assert {s: (out / f"seed={s}" / "results.json").stat().st_mtime_ns for s in SEEDS} == written
    longer, _ = train_in_process(out, [*DATA, "seeds=3"])
    assert [r["seed"] for r in longer] == [0, 1, 2]
    assert {s: (out / f"seed={s}" / "results.json").stat().st_mtime_ns for s in SEEDS} == written
    assert longer[2]["stacked"]["seeds"] == [2]
    # the report sees the seeds' folders as runs, and the stacked job's folder as none
    assert sorted(p.name for p in find_run_dirs([tmp_path])) == ["seed=0", "seed=1", "seed=2"]
    # archived under their job's folder (several stacked jobs' seed=<s> folders never collide),
    # without machine paths, and tabled as three seeds of one configuration
    copied, _ = archive([tmp_path], tmp_path / "archive")
    assert copied == 3 and sorted(str(p.parent.relative_to(tmp_path / "archive"))
                                  for p in (tmp_path / "archive").rglob("results.json")) == [
        "run/seed=0", "run/seed=1", "run/seed=2"]
    collection = collect([tmp_path / "archive"])
    assert len(collection.runs) == 3 and collection.runs["seed"].tolist() == [0, 1, 2]
    assert not collection.problems.shape[0]


@pytest.mark.parametrize(("overrides", "named"), [
    (["weighting=gradnorm"], "GradNorm"),
    (["weighting=uncertainty"], "weighting=fixed or data_volume"),
    (["compile=true"], "compile=true"),
    (["data.seed=${seed}"], "data config follows the run seed"),
    (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val"),
    (["+callbacks.early_stopping.stopping_threshold=0.1"], "callbacks.early_stopping.stopping_threshold"),
    (["callbacks.model_checkpoint=null"], "callbacks.model_checkpoint=null"),
])
def test_what_cannot_be_stacked_is_refused_in_one_line(tmp_path, overrides, named) -> None:
    with pytest.raises(BadInputError) as err:
        train_in_process(tmp_path, [*DATA, "seeds=2", *overrides])
    message = str(err.value)
    assert named in message and "seed=range(2)" in message and "\n" not in message
    assert not list(tmp_path.glob("seed=*"))  # nothing written


def test_an_interrupted_stack_resumes_and_ends_as_the_uninterrupted_one(tmp_path, monkeypatch) -> None:
    reference, _ = train_in_process(tmp_path / "reference", [*DATA, "seeds=2"])
    started: list[int] = []
    crash = {"at": 3}

    def on_train_epoch_start(self) -> None:  # after last.ckpt of the epoch before was written
        if self.current_epoch == crash["at"]:
            raise RuntimeError("simulated crash")
        started.append(self.current_epoch)

    monkeypatch.setattr(StackedSeedsModule, "on_train_epoch_start", on_train_epoch_start, raising=False)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_in_process(out, [*DATA, "seeds=2"])
    assert {_read(out / f"seed={s}")["status"] for s in SEEDS} == {"failed"}
    crash["at"], started[:] = None, []
    resumed, _ = train_in_process(out, [*DATA, "seeds=2"])
    assert started and started[0] == 3  # went on from its last epoch, not from scratch
    for got, want in zip(resumed, reference):
        assert got["status"] == "complete"
        assert (got["best_epochs"], got["epochs_trained"]) == (want["best_epochs"], want["epochs_trained"])
        assert got["metrics"] == want["metrics"]  # the same arithmetic: resumed exactly
        assert len(got["train_loss_per_epoch"]) == len(want["train_loss_per_epoch"])
        for resumed, uninterrupted in zip(got["train_loss_per_epoch"], want["train_loss_per_epoch"]):
            assert resumed == pytest.approx(uninterrupted)


def test_a_seed_that_goes_non_finite_fails_alone_and_the_others_end_as_their_own_runs(tmp_path, monkeypatch) -> None:
    def on_train_epoch_start(self) -> None:  # seed 1's weights become NaN before its second epoch
        if self.current_epoch == 1:
            with torch.no_grad():
                for param in self.stacked:
                    param[1] = float("nan")

    monkeypatch.setattr(StackedSeedsModule, "on_train_epoch_start", on_train_epoch_start, raising=False)
    with pytest.raises(NonFiniteError, match="training loss of task"):
        train_in_process(tmp_path / "stack", [*DATA, "seeds=2"])
    failed = _read(tmp_path / "stack" / "seed=1")
    assert failed["status"] == "failed" and failed["failure"]["quantity"] == "training loss"
    survivor = _read(tmp_path / "stack" / "seed=0")
    monkeypatch.undo()
    own, _ = train_in_process(tmp_path / "own0", [*DATA, "seed=0"])
    assert survivor["status"] == "complete"
    assert (survivor["best_epochs"], survivor["epochs_trained"]) == (own["best_epochs"], own["epochs_trained"])
    want = own["metrics"]["test"]["task1"]["mse"]
    assert survivor["metrics"]["test"]["task1"]["mse"] == pytest.approx(want, rel=2e-3)
