"""Figures of :mod:`mtlrec.insight`: importance bars per task, a gate × expert utilisation
heatmap, and task-gradient conflict over training. Drawn and saved like the report's figures
(bare Figures on the Agg canvas, PNG and PDF written atomically: :func:`mtlrec.report.plots.save_figure`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtlrec.report.plots import file_stem, save_figure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_importance(summary: Mapping[str, Mapping[str, Mapping[str, float]]], task: str, metric: str,
                    out_dir: str | os.PathLike, stem: str, top: int = 20, spread: str = "permutations") -> list[Path]:
    """Horizontal bars: the ``top`` groups by mean Δmetric for ``task``, ± one std (over the
    model's runs, or over one run's permutations: ``spread``)."""
    ranked = sorted(summary, key=lambda g: summary[g][task]["metric_mean"], reverse=True)[:top]
    means = [summary[g][task]["metric_mean"] for g in ranked]
    stds = [summary[g][task]["metric_std"] for g in ranked]
    fig = _figure(6.0, 0.3 * len(ranked) + 1.2)
    ax = fig.add_subplot()
    ax.barh(range(len(ranked)), means, xerr=stds, color="#4C72B0", ecolor="#333333", capsize=2)
    ax.set_yticks(range(len(ranked)), ranked)
    ax.invert_yaxis()
    ax.axvline(0.0, color="#999999", linewidth=0.8)
    ax.set_xlabel(f"{task}: how much worse {metric} gets when the input is permuted (± std over {spread})")
    return save_figure(fig, out_dir, file_stem(stem))


def plot_utilisation(matrix: np.ndarray, gates: Sequence[str], experts: Sequence[str], title: str,
                     out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """``matrix[g, e]``: gate g's mean weight on expert e (NaN where a gate does not see it)."""
    fig = _figure(0.55 * len(experts) + 2.5, 0.45 * len(gates) + 1.5)
    ax = fig.add_subplot()
    shown = np.ma.masked_invalid(matrix)
    image = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=max(float(np.nanmax(matrix)), 1e-6), aspect="auto")
    for (g, e), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(e, g, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 * np.nanmax(matrix) else "black")
    ax.set_xticks(range(len(experts)), experts, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(gates)), gates, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="mean gate weight")
    return save_figure(fig, out_dir, file_stem(stem))


def plot_conflict(curves: Mapping[str, Sequence[tuple[Sequence[int], Sequence[float]]]], title: str,
                  out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """``curves[label]``: one (steps, cosines) per run; a thin line per run and the mean across
    runs (on the steps they share) in bold."""
    fig = _figure(6.5, 3.5)
    ax = fig.add_subplot()
    colours = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    for i, (label, runs) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        for steps, values in runs:
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        common = sorted(set.intersection(*(set(s) for s, _ in runs))) if runs else []
        if common:
            mean = [np.mean([dict(zip(s, v))[step] for s, v in runs]) for step in common]
            ax.plot(common, mean, color=colour, linewidth=2.0, label=f"{label} (mean of {len(runs)})")
    ax.axhline(0.0, color="#999999", linewidth=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cosine of the task gradients")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, file_stem(stem))


def plot_pair_matrix(matrix: np.ndarray, tasks: Sequence[str], title: str, out_dir: str | os.PathLike,
                     stem: str) -> list[Path]:
    """A task × task matrix of mean gradient cosines (for more than two tasks)."""
    fig = _figure(0.6 * len(tasks) + 2.5, 0.6 * len(tasks) + 1.5)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="coolwarm", vmin=-1.0, vmax=1.0)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="mean cosine")
    return save_figure(fig, out_dir, file_stem(stem))


def plot_feature_task(summary: Mapping[str, Mapping[str, Mapping[str, float]]], tasks: Sequence[str], title: str,
                      out_dir: str | os.PathLike, stem: str, top: int = 20) -> list[Path]:
    """The feature × task matrix: each input's share of each task's total (positive) importance, for
    the ``top`` inputs by their largest share; an input that matters to one task lights one column."""
    positive = {g: [max(summary[g][t]["metric_mean"], 0.0) for t in tasks] for g in summary}
    totals = np.array([sum(positive[g][k] for g in positive) for k in range(len(tasks))])
    share = {g: np.array(v) / np.where(totals > 0, totals, 1.0) for g, v in positive.items()}
    ranked = sorted(share, key=lambda g: -share[g].max())[:top]
    matrix = np.stack([share[g] for g in ranked]) if ranked else np.zeros((0, len(tasks)))
    fig = _figure(1.2 * len(tasks) + 3.0, 0.3 * len(ranked) + 1.5)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto")
    for (i, k), value in np.ndenumerate(matrix):
        ax.text(k, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value < 0.6 * max(float(matrix.max()), 1e-9) else "black")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(ranked)), ranked, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the task's importance")
    return save_figure(fig, out_dir, file_stem(stem))
