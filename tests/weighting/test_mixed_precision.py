"""bf16 autocast on CPU (``trainer.precision=bf16-mixed``) trains every shipped weighting to the
end with finite losses and task weights: the forward runs in bfloat16, and the gradients a
weighting sets itself (GradNorm, the aggregators) need no loss scaling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

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
