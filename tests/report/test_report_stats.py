"""Statistics: checked against numpy and against Welch's formula written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from report_fixtures import welch_by_hand

from mtlrec.report.stats import best_rows, decimals, direction, summarize, welch_p


def test_summarize_is_mean_sample_std_and_count() -> None:
    values = [0.9512, 0.9530, 0.9521, float("nan")]
    s = summarize(values)
    assert s.n == 3
    assert s.mean == pytest.approx(np.mean(values[:3]), abs=1e-15)
    assert s.std == pytest.approx(np.std(values[:3], ddof=1), rel=1e-12)


def test_summarize_small_groups() -> None:
    assert summarize([0.5]).n == 1 and math.isnan(summarize([0.5]).std)
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert summarize([0.99, 0.99, 0.99]).std == 0.0  # exact, not 1e-16


def test_welch_matches_formula_and_unequal_sizes() -> None:
    a = [0.9512, 0.9530, 0.9521, 0.9540]
    b = [0.9401, 0.9433, 0.9390]
    assert welch_p(a, b) == pytest.approx(welch_by_hand(a, b), rel=1e-9)
    assert welch_p(b, a) == pytest.approx(welch_by_hand(a, b), rel=1e-9)


def test_welch_undefined_cases_are_nan() -> None:
    assert math.isnan(welch_p([1.0], [1.0, 2.0]))
    assert math.isnan(welch_p([0.99, 0.99, 0.99], [0.98, 0.98]))  # no spread at all: no test


@pytest.mark.parametrize(
    ("column", "way"),
    [("test/income/auc", "max"), ("val/x/accuracy", "max"), ("test/income/logloss", "min"),
     ("test/rating/mse", "min"), ("test/income/loss", "min"), ("test/x/ndcg@10", "max"), ("test/x/weird", None)],
)
def test_direction(column: str, way: str | None) -> None:
    assert direction(column) == way


def test_decimals() -> None:
    assert decimals("test/income/auc", [0.95]) == 4
    assert decimals("test/income/loss", [0.31, 0.29]) == 4
    assert decimals("test/rating/mse", [12.3]) == 2
    assert decimals("test/rating/mse", [0.0123]) == 5


def test_best_rows_direction_and_ties_at_printed_precision() -> None:
    assert best_rows([0.9, 0.95, 0.93], "test/a/auc", 4) == {1}
    assert best_rows([0.3, 0.2, 0.25], "test/a/loss", 4) == {1}
    assert best_rows([0.95121, 0.95119, 0.9], "test/a/auc", 4) == {0, 1}
    assert best_rows([0.9, float("nan")], "test/a/auc", 4) == set()  # only one finite row
    assert best_rows([0.9, 0.8], "test/a/weird", 4) == set()  # unknown direction
