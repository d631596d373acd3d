"""Summary statistics over seeds, Welch's t-test and paired wins against a baseline, metric directions.

Seeds are the unit of replication: each group of runs (one table row) is summarised by its mean,
its *sample* standard deviation (``ddof=1``: we estimate the spread of a new seed, not describe
these few) and its size ``n``. Two groups are compared with Welch's t-test because architectures
and weightings differ in variance across seeds, so the pooled-variance t-test's assumption fails.

Welch's test ignores that runs of one seed share initialisation, batch order and (for synthetic
data) the dataset itself. :func:`paired_wins` uses that pairing: out of the seeds both groups
ran, at how many did this group's run beat the baseline's? It makes no distributional
assumption, and a consistent small gain shows up as "10/10" even when the spread across seeds
hides it from an unpaired test.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as _scipy_stats

Direction = Literal["max", "min"]

# Metric names (the last path part, before any "@k") whose best value is the largest / smallest.
HIGHER_IS_BETTER = frozenset(
    {"auc", "gauc", "uauc", "accuracy", "acc", "precision", "recall", "f1", "ndcg", "hr", "hit", "mrr", "map"}
)
LOWER_IS_BETTER = frozenset({"logloss", "mse", "rmse", "mae", "loss", "bce", "ce", "nll"})
# Metrics bounded in [0, 1] and conventionally printed with 4 decimals (today: all higher-is-better ones).
AUC_LIKE = HIGHER_IS_BETTER
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (NaN for n < 2) and count of the finite values of one group."""

    mean: float
    std: float
    n: int


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def summarize(values: Iterable[float]) -> Summary:
    """Summarise one group; NaN values (a metric a run did not log) are left out of ``n``."""
    data = _finite(values).tolist()
    n = len(data)
    # statistics.* compute exactly, then round once: three equal seeds give std 0.0, not 1e-16.
    mean = statistics.fmean(data) if n else math.nan
    std = statistics.stdev(data) if n >= 2 else math.nan
    return Summary(mean, std, n)


def welch_p(a: Iterable[float], b: Iterable[float]) -> float:
    """Two-sided Welch's t-test p-value of ``a`` vs ``b``; NaN when undefined.

    Undefined means fewer than two values in a group (no variance estimate), or both groups
    without any spread (t is 0/0) — then there is no evidence either way, not p = 0.
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return math.nan
    if np.all(x == x[0]) and np.all(y == y[0]):
        return math.nan
    return float(_scipy_stats.ttest_ind(x, y, equal_var=False).pvalue)


@dataclass(frozen=True)
class Wins:
    """Paired comparison of one group against the baseline, seed by seed.

    ``n`` counts the pairs where both runs logged a finite value; of those, ``wins`` are better
    than the baseline in the metric's direction and ``ties`` exactly equal (neither a win nor a
    loss). ``wins`` and ``ties`` are ``None`` for a metric of unknown direction.
    """

    wins: int | None
    ties: int | None
    n: int

    @property
    def losses(self) -> int | None:
        return None if self.wins is None or self.ties is None else self.n - self.wins - self.ties


def paired_wins(pairs: Iterable[tuple[float, float]], way: Direction | None) -> Wins:
    """Count ``(value, baseline value)`` pairs where the value is better, or equal, per ``way``.

    Pairs with a NaN on either side (a metric one of the two runs did not log) are left out of
    ``n``. Values are compared exactly, not at the printed precision: per-seed values are never
    printed, and rounding would turn small consistent gains into ties.
    """
    wins = ties = n = 0
    for a, b in pairs:
        a, b = float(a), float(b)
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        n += 1
        if a == b:
            ties += 1
        elif (a > b) if way == "max" else (a < b):
            wins += 1
    if way is None:
        return Wins(None, None, n)
    return Wins(wins, ties, n)


def metric_name(column: str) -> str:
    """``"test/income/auc"`` -> ``"auc"``; ``"val/ndcg@10"`` -> ``"ndcg"``."""
    return column.rsplit("/", 1)[-1].split("@", 1)[0].lower()


def direction(column: str) -> Direction | None:
    """Whether larger (``"max"``) or smaller (``"min"``) values are better; ``None`` if unknown."""
    name = metric_name(column)
    if name in HIGHER_IS_BETTER:
        return "max"
    if name in LOWER_IS_BETTER:
        return "min"
    return None


def decimals(column: str, means: Sequence[float]) -> int:
    """Decimals to print: 4 for AUC-like metrics, else 4 significant digits of the largest mean.

    One choice per column, so a column's numbers line up and compare at the same precision.
    """
    if metric_name(column) in AUC_LIKE:
        return 4
    finite = _finite(means)
    largest = float(np.max(np.abs(finite))) if finite.size else 0.0
    if largest == 0.0:
        return 4
    return int(min(6, max(0, 3 - math.floor(math.log10(largest)))))


def best_rows(means: Sequence[float], column: str, ndigits: int) -> set[int]:
    """Indices of the best mean(s) of a column, compared at the printed precision.

    Comparing rounded values makes the mark agree with what a reader sees: two rows printed as
    0.9512 are both marked. No row is marked for a metric of unknown direction or with < 2 rows.
    """
    way = direction(column)
    shown = [round(m, ndigits) if math.isfinite(m) else math.nan for m in means]
    finite = [m for m in shown if math.isfinite(m)]
    if way is None or len(finite) < 2:
        return set()
    target = max(finite) if way == "max" else min(finite)
    return {i for i, m in enumerate(shown) if m == target}
