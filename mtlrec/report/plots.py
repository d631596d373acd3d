"""Figures for a report: a metric against a swept factor, and task-weight trajectories.

Drawn on bare :class:`~matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``: a report run from a notebook or a headless server must not switch, or need, a GUI
backend. Each figure is saved as PNG and PDF (atomically); the PDF carries no creation date and
SVG ids are salted with a constant, so regenerating gives the same files where matplotlib allows.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mtlrec.report.collect import Collection, is_missing
from mtlrec.report.output import write_with
from mtlrec.report.stats import summarize
from mtlrec.report.table import format_value, group_runs, row_label, sort_key

FORMATS = ("png", "pdf")
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
_RC = {"svg.hashsalt": "mtlrec-report", "pdf.compression": 6, "figure.dpi": 100, "savefig.dpi": 150}


def file_stem(text: str) -> str:
    """A safe file name part: ``test/income/auc`` -> ``test_income_auc``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"


def save_figure(fig: Figure, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` into ``out_dir``, each atomically."""
    FigureCanvasAgg(fig)
    written = []
    with matplotlib.rc_context(_RC):
        for fmt in FORMATS:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, metadata=_METADATA[fmt], bbox_inches="tight")
            data = buf.getvalue()
            written.append(write_with(Path(out_dir) / f"{stem}.{fmt}", lambda fh, d=data: fh.write(d)))
    return written


def _positions(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """x positions: the values themselves when numeric, else 0, 1, 2… with the values as tick labels."""
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    return list(range(len(values))), [format_value(v) for v in values]


def plot_metric(
    runs: pd.DataFrame,
    x: str,
    metric: str,
    out_dir: str | os.PathLike,
    lines: str | None = None,
    title: str | None = None,
) -> list[Path]:
    """``metric`` (mean ± std over seeds, as error bars) against factor ``x``, one line per ``lines`` value."""
    for name in [x, metric] + ([lines] if lines else []):
        if name not in runs.columns:
            raise ValueError(f"no column {name!r} among the runs")
    present = {format_value(v): v for v in runs[x].tolist() if not is_missing(v)}
    xs = sorted(present.values(), key=sort_key)
    shown = runs[x].map(format_value)
    pos, ticks = _positions(xs)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for line_values, group in group_runs(runs, [lines] if lines else []):
        means, stds, where = [], [], []
        for value, p in zip(xs, pos):
            s = summarize(group.loc[shown.loc[group.index] == format_value(value), metric])
            if s.n:
                means.append(s.mean)
                stds.append(s.std if math.isfinite(s.std) else 0.0)
                where.append(p)
        label = row_label([lines], line_values) if lines else None
        ax.errorbar(where, means, yerr=stds, marker="o", capsize=3, label=label)
    if ticks is not None:
        ax.set_xticks(pos, ticks)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(title=None, fontsize="small")
    ax.set_title(title or f"{metric} vs {x} (mean ± std over seeds)", fontsize="medium")
    stem = f"{file_stem(metric)}_vs_{file_stem(x)}" + (f"_by_{file_stem(lines)}" if lines else "")
    return save_figure(fig, out_dir, stem)


def weight_trajectories(collection: Collection, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per task, an (epochs × runs) array of weights from ``weights.per_epoch``; NaN-padded."""
    per_run = []
    for run_dir in runs["run_dir"]:
        epochs = ((collection.results.get(run_dir) or {}).get("weights") or {}).get("per_epoch") or []
        if epochs:
            per_run.append([e if isinstance(e, dict) else {} for e in epochs])
    tasks = sorted({t for epochs in per_run for e in epochs for t in e})
    length = max((len(e) for e in per_run), default=0)
    out = {}
    for task in tasks:
        arr = np.full((length, len(per_run)), np.nan)
        for j, epochs in enumerate(per_run):
            for i, e in enumerate(epochs):
                try:
                    arr[i, j] = float(e[task])
                except (KeyError, TypeError, ValueError):
                    pass
        out[task] = arr
    return out


def _mean_std(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise mean and sample std ignoring NaN (std 0 where fewer than two runs reached an epoch)."""
    count = np.sum(np.isfinite(arr), axis=1)
    total = np.nansum(arr, axis=1)
    mean = np.divide(total, count, out=np.full(len(arr), np.nan), where=count > 0)
    dev = np.nansum((arr - mean[:, None]) ** 2, axis=1)
    std = np.sqrt(np.divide(dev, count - 1, out=np.zeros(len(arr)), where=count > 1))
    return mean, std


def plot_weights(
    collection: Collection,
    row_keys: Sequence[str],
    out_dir: str | os.PathLike,
    title: str | None = None,
) -> list[Path]:
    """Task weights per epoch (mean over seeds, band = ±std), one subplot per row group.

    Returns no files when no run logged per-epoch weights. Runs that stopped early simply end
    earlier: later epochs average over the runs that reached them.
    """
    groups = [(values, weight_trajectories(collection, g)) for values, g in group_runs(collection.runs, row_keys)]
    groups = [(v, w) for v, w in groups if w]
    if not groups:
        return []
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, (values, weights) in zip(axes.flat, groups):
        for task, arr in weights.items():
            mean, std = _mean_std(arr)
            epochs = np.arange(len(mean))
            ax.plot(epochs, mean, label=task)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
        ax.set_title(row_label(row_keys, values), fontsize="small")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("task weight")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title or "Task weights per epoch (mean ± std over seeds)", fontsize="medium")
    return save_figure(fig, out_dir, "weights")
