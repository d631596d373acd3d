"""Plots: files written, of the right kind, non-empty; weight trajectories averaged over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_fixtures import two_factor_sweep

from mtlrec.report.collect import collect
from mtlrec.report.plots import plot_metric, plot_weights, weight_trajectories

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


def assert_figures(paths: list[Path], stem: str) -> None:
    assert sorted(p.name for p in paths) == [f"{stem}.pdf", f"{stem}.png"]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(MAGIC[path.suffix])
    assert not [p for p in paths[0].parent.iterdir() if p.name.endswith(".tmp")]


def test_metric_vs_numeric_factor_one_line_per_arch(tmp_path: Path) -> None:
    two_factor_sweep(tmp_path / "runs")
    c = collect([tmp_path / "runs"])
    paths = plot_metric(c.runs, "data.correlation", "test/income/loss", tmp_path / "out", lines="arch")
    assert_figures(paths, "test_income_loss_vs_data.correlation_by_arch")


def test_metric_vs_categorical_factor(sweep: Path, tmp_path: Path) -> None:
    paths = plot_metric(collect([sweep]).runs, "arch", "test/income/auc", tmp_path)
    assert_figures(paths, "test_income_auc_vs_arch")


def test_unknown_columns_raise(sweep: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no column"):
        plot_metric(collect([sweep]).runs, "lr", "test/income/auc", tmp_path)


def test_weight_trajectories_mean_over_seeds(sweep: Path, tmp_path: Path) -> None:
    c = collect([sweep])
    mmoe = c.runs[c.runs["arch"] == "mmoe"]
    weights = weight_trajectories(c, mmoe)
    assert sorted(weights) == ["income", "marital"]
    assert weights["income"].shape == (3, 3)  # epochs × seeds
    # Fixture: income weight = 1 + 0.1 * epoch + 0.01 * seed, seeds 0..2 -> mean 1.01 + 0.1 * epoch.
    np.testing.assert_allclose(weights["income"].mean(axis=1), [1.01, 1.11, 1.21])
    assert_figures(plot_weights(c, ["arch"], tmp_path), "weights")


def test_no_weights_logged_gives_no_plot(tmp_path: Path) -> None:
    two_factor_sweep(tmp_path / "runs")
    assert plot_weights(collect([tmp_path / "runs"]), ["arch"], tmp_path / "out") == []
