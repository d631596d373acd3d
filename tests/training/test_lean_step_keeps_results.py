"""The lean step (gates scored as a bank, index_select batches, fused Adam, GradNorm's batched task
gradients) changes speed, not results: fixed-seed test AUCs on the committed Census fixture equal
those of the code before it (commit d41055d, measured with the same overrides) within 1e-4."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import train_in_process

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "census"
# test AUC (income, marital) at d41055d: data.group=1, seed=0, 2 epochs, batch 128
BEFORE = {
    ("mmoe", "fixed"): (0.77499, 0.735062), ("mmoe", "gradnorm"): (0.773344, 0.760084),
    ("ple", "fixed"): (0.613945, 0.865879), ("ple", "gradnorm"): (0.609214, 0.867881),
    ("omoe", "fixed"): (0.762238, 0.837954), ("omoe", "gradnorm"): (0.76594, 0.843159),
}


@pytest.mark.parametrize("arch,weighting", sorted(BEFORE))
def test_fixed_seed_aucs_are_those_before_the_lean_step(arch, weighting, tmp_path) -> None:
    record, _ = train_in_process(tmp_path, ["data=census_income", f"data.root={FIXTURE}", "data.group=1",
                                            f"arch={arch}", f"weighting={weighting}", "seed=0", "trainer.max_epochs=2",
                                            "data.loader.batch_size=128", "console.progress_bar=false", "logger=none"])
    got = (record["metrics"]["test"]["income"]["auc"], record["metrics"]["test"]["marital"]["auc"])
    assert got == pytest.approx(BEFORE[arch, weighting], abs=1e-4)
