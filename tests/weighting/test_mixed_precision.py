"""bf16 autocast on CPU (``trainer.precision=bf16-mixed``) trains every shipped weighting to the
end with finite losses and task weights: the forward runs in bfloat16, and the gradients a
weighting sets itself (GradNorm, the aggregators) need no loss scaling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import train_in_process

CONF = Path(__file__).resolve().parents[2] / "conf" / "weighting"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_bf16_autocast_trains_every_weighting_with_finite_losses(name, tmp_path) -> None:
    record, _ = train_in_process(tmp_path / "run", [f"weighting={name}", "arch=mmoe", "trainer.precision=bf16-mixed",
                                                    "trainer.max_epochs=2", "data.num_train=600", "data.num_val=200",
                                                    "data.num_test=200", "data.loader.batch_size=100",
                                                    "console.progress_bar=false"])
    assert record["status"] == "complete" and record["config"]["trainer"]["precision"] == "bf16-mixed"
    losses = [v for epoch in record["train_loss_per_epoch"] for v in epoch.values()]
    weights = [v for epoch in record["weights"]["per_epoch"] for v in epoch.values()]
    assert len(record["train_loss_per_epoch"]) == 2 and all(math.isfinite(v) for v in losses + weights)
    assert all(math.isfinite(v["auc"]) for v in record["metrics"]["test"].values() if "auc" in v)


SMALL = ["data.seed=0", "arch=mmoe", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "data.num_train=600",
         "data.num_val=300", "data.num_test=300", "data.loader.batch_size=100", "console.progress_bar=false"]


@pytest.mark.parametrize("seeds", [1, 2], ids=["one run", "stacked seeds"])
def test_bf16_training_scores_validation_and_test_in_float32(seeds, tmp_path, monkeypatch) -> None:
    """Autocast is off where metrics are updated: every logit a metric sees is float32 (bf16 keeps
    8 bits of mantissa, so AUC would rank ties), in one run and in a stack of seeds alike."""
    from mtlrec.training import module, stacked

    seen = []
    for where in (module, stacked):
        def spy(outputs, batch, task, _real=where._in_sample_space):
            seen.append(outputs.logits[task].dtype)
            return _real(outputs, batch, task)
        monkeypatch.setattr(where, "_in_sample_space", spy)
    record, _ = train_in_process(tmp_path / "run", [*SMALL, f"seeds={seeds}"])
    assert seen and set(seen) == {torch.float32}


def test_bf16_run_records_the_metrics_its_float32_scorer_gives(tmp_path) -> None:
    """The test metrics a bf16-mixed run records are those of its checkpoint scored in float32
    (:class:`~mtlrec.predict.RunScorer`), to float noise; bf16-rounded logits move the logloss
    by ~1e-3."""
    from torchmetrics.functional.classification import binary_auroc

    from mtlrec.predict import RunScorer, run_split

    census = ["data=census_income", f"data.root={CONF.parents[1] / 'tests' / 'fixtures' / 'census'}"]
    record, _ = train_in_process(tmp_path / "run", [*census, "arch=mmoe", "trainer.precision=bf16-mixed",
                                                    "trainer.max_epochs=1", "data.loader.batch_size=64",
                                                    "console.progress_bar=false"])
    scorer = RunScorer(tmp_path / "run")
    rows = run_split(record["config"], "test")
    probabilities = scorer.predict(rows)
    for task, p in probabilities.items():
        y = torch.tensor(rows[task].to_numpy())
        p = torch.tensor(p, dtype=torch.float64)
        logloss = -(y * p.log() + (1 - y) * (1 - p).log()).mean().item()
        assert record["metrics"]["test"][task]["logloss"] == pytest.approx(logloss, rel=1e-5)
        assert record["metrics"]["test"][task]["auc"] == pytest.approx(binary_auroc(p, y.long()).item(), abs=1e-6)
