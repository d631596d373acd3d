"""The table as data: groups, exact statistics, best marks, baseline p-values, reference columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import KNOWN, two_factor_sweep, welch_by_hand

from mtlrec.report.collect import collect
from mtlrec.report.table import build_table


def column(arch: str, index: int) -> list[float]:
    return [v[index] for v in KNOWN[arch].values()]


def test_rows_cells_exact(sweep: Path) -> None:
    t = build_table(collect([sweep]))
    assert t.row_keys == ["arch"]
    assert t.rows == [("mmoe",), ("shared_bottom",)]
    assert t.columns == ["test/income/auc", "test/income/loss", "test/marital/auc"]
    for i, arch in enumerate(["mmoe", "shared_bottom"]):
        cell = t.cells[(i, "test/income/auc")]
        assert cell.summary.n == 3
        assert cell.summary.mean == pytest.approx(np.mean(column(arch, 0)), abs=1e-12)
        assert cell.summary.std == pytest.approx(np.std(column(arch, 0), ddof=1), rel=1e-9)
    assert t.decimals["test/income/auc"] == 4
    # MMoE has the higher AUC and the lower loss: it is best in both directions.
    assert t.cells[(0, "test/income/auc")].best and not t.cells[(1, "test/income/auc")].best
    assert t.cells[(0, "test/income/loss")].best and not t.cells[(1, "test/income/loss")].best
    assert t.throughput[0].mean == 1010.0 and t.params == [(12345.0, 12345.0), (6789.0, 6789.0)]
    assert t.n_runs == 6  # the failed run with AUC 0.1 is not in any mean


def test_val_split_and_metric_filter(sweep: Path) -> None:
    t = build_table(collect([sweep]), split="val", metrics=["*/auc"])
    assert t.columns == ["val/income/auc", "val/marital/auc"]
    assert t.cells[(1, "val/income/auc")].summary.mean == pytest.approx(np.mean(column("shared_bottom", 2)))
    t = build_table(collect([sweep]), metrics=["income/*"])
    assert t.columns == ["test/income/auc", "test/income/loss"]


def test_baseline_p_values_match_welch_formula(sweep: Path) -> None:
    t = build_table(collect([sweep]), baseline={"arch": "shared_bottom"})
    assert t.baseline_rows == [1, 1]
    p = t.cells[(0, "test/income/auc")].p_value
    assert p == pytest.approx(welch_by_hand(column("mmoe", 0), column("shared_bottom", 0)), rel=1e-9)
    assert p < 0.05
    assert t.cells[(0, "test/income/loss")].p_value == pytest.approx(
        welch_by_hand(column("mmoe", 1), column("shared_bottom", 1)), rel=1e-9)
    assert math.isnan(t.cells[(1, "test/income/auc")].p_value)  # the baseline itself
    assert math.isnan(t.cells[(0, "test/marital/auc")].p_value)  # no spread in either group


def test_default_rows_are_varying_factors_and_baseline_matches_other_factors(tmp_path: Path) -> None:
    two_factor_sweep(tmp_path)
    c = collect([tmp_path])
    t = build_table(c, baseline={"arch": "shared_bottom"})
    assert t.row_keys == ["arch", "data.correlation"]
    assert [t.label(i) for i in range(4)] == ["arch=mmoe,data.correlation=0.5", "arch=mmoe,data.correlation=1.0",
                                              "arch=shared_bottom,data.correlation=0.5",
                                              "arch=shared_bottom,data.correlation=1.0"]
    assert t.baseline_rows == [2, 3, 2, 3]
    assert t.cells[(0, "test/income/auc")].p_value < 0.05  # MMoE beats SB at 0.5 ...
    assert t.cells[(1, "test/income/auc")].p_value == pytest.approx(1.0)  # ... and ties at 1.0
    pooled = build_table(c, row_keys=["arch"])
    assert pooled.cells[(0, "test/income/auc")].summary.n == 6
    assert any("pooled" in w for w in pooled.warnings)
    single = build_table(c, row_keys=[])
    assert single.rows == [()] and single.label(0) == "all" and single.cells[(0, "test/income/auc")].summary.n == 12


def test_reference_columns_match_rows_by_value(tmp_path: Path) -> None:
    two_factor_sweep(tmp_path)
    reference = {"paper": {"data.correlation=0.50,arch=mmoe": {"test/income/auc": 0.9359, "income/loss": "0.3 (fig)"},
                           "arch=ple,data.correlation=0.5": {"test/income/auc": 0.9}},
                 "empty": {"arch=mmoe,data.correlation=0.5": {"val/income/auc": 0.9}}}
    t = build_table(collect([tmp_path]), reference=reference)
    assert t.references == {"paper": {(0, "test/income/auc"): 0.9359, (0, "test/income/loss"): "0.3 (fig)"}}
    assert t.reference_columns("test/income/auc") == ["paper"]
    assert any("'arch=ple,data.correlation=0.5' matches no table row" in w for w in t.warnings)
    assert any("'val/income/auc'" in w and "not a shown column" in w for w in t.warnings)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"row_keys": ["nope"]}, "unknown row key"), ({"metrics": ["*/ndcg"]}, "no test metric matches"),
     ({"baseline": {"arch": "ple"}}, "matches no row"), ({"baseline": {"lr": "1"}}, "are not row keys")],
)
def test_impossible_requests_raise(sweep: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_table(collect([sweep]), **kwargs)
