"""Find every run under some folders and turn their ``results.json`` files into one tidy frame.

A report must never average a half-finished or crashed run into a mean, and must never count the
same run twice because a sweep was re-run into another folder. So collection sorts run folders
into three piles, each returned separately and each shown in the report:

* ``runs``: complete, deduplicated runs — one row each, the only rows statistics are computed on;
* ``problems``: run folders whose ``results.json`` is missing, unreadable, of an unknown format,
  or whose status is not ``"complete"`` (with the reason);
* ``duplicates``: complete runs of a ``config_hash`` + ``seed`` already kept from another folder.

A *run folder* is a folder holding ``results.json`` or a Hydra ``.hydra/`` folder (a job that
started but may never have written its results).

Derived metrics are added to the frame afterwards, one value per run, so every statistic treats
them like logged ones: :func:`add_task_mean` adds ``<split>/mean/<metric>``, a run's mean of one
metric over its tasks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.training.results import FORMAT_VERSION, RESULTS_FILE, STACK_DIR, read_results

HYDRA_DIR = ".hydra"

# Columns every run row has; override keys are added beside them as factor columns.
BASE_COLUMNS = ("seed", "status", "config_hash", "train_samples_per_second", "num_parameters", "run_dir")
PROBLEM_COLUMNS = ("run_dir", "status", "reason", "overrides")
DUPLICATE_COLUMNS = ("run_dir", "kept", "config_hash", "seed")

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Collection:
    """Everything found under the searched paths (see the module docstring for the three piles).

    ``factors`` lists the override keys seen on complete runs (sorted, ``seed`` excluded): the
    candidate row keys of a table. ``results`` maps ``run_dir`` to the raw results of each kept run
    (plots need the per-epoch task weights, which do not fit a flat frame).
    """

    runs: pd.DataFrame
    problems: pd.DataFrame
    duplicates: pd.DataFrame
    factors: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    searched: list[str] = field(default_factory=list)
    # Derived metric column -> the tasks it averages (see add_task_mean), in the order added.
    derived: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when not a single run folder (complete or not) was found."""
        return self.runs.empty and self.problems.empty and self.duplicates.empty

    def metric_columns(self, split: str | None = None) -> list[str]:
        """The metric columns (``<split>/<task>/<metric>``), optionally of one split.

        Logged metrics come sorted, then derived ones (task means) in the order they were added,
        so a table's average columns sit at its right edge, as in papers.
        """
        cols = [c for c in self.runs.columns if c.startswith(("test/", "val/")) and c not in self.derived]
        cols = sorted(cols) + [c for c in self.derived if c in self.runs.columns]
        if split is not None:
            cols = [c for c in cols if c.startswith(f"{split}/")]
        return cols


# --------------------------------------------------------------------------- discovery


def natural_key(name: str) -> list[str | int]:
    """Sort key putting Hydra job ``2`` before ``10`` (text parts compare as text, digits as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every run folder at or below ``paths``, each once, in a fixed order.

    Paths come in the order given; below each, folders in natural order (job 2 before job 10).

    A path may be a run folder itself, a ``results.json`` file, or any folder above run folders
    (a Hydra multirun folder, a folder of sweeps). ``.hydra/`` and other hidden folders are not
    searched: they hold configs, never runs. Paths as given are kept (relative stays relative) so
    the report does not depend on where the repository was checked out.
    """
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if root.is_file() and root.name == RESULTS_FILE:
            root = root.parent
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
            here = Path(dirpath)
            # a job of K stacked seeds (seeds=K) is not a run: its seed=<s>/ folders are, once written
            stack = (here / STACK_DIR).is_dir() and any((here / d / RESULTS_FILE).is_file() for d in dirnames)
            if RESULTS_FILE in filenames or ((here / HYDRA_DIR).is_dir() and not stack):
                found.setdefault(here.resolve(), here)
    return list(found.values())


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, str] | None:
    """``"arch=mmoe"`` -> ``("arch", "mmoe")``; Hydra's ``+``/``++`` prefixes are dropped.

    Deletions (``~key``) and malformed entries carry no factor value and give ``None``.
    """
    text = text.strip()
    if text.startswith("~") or "=" not in text:
        return None
    key, value = text.split("=", 1)
    key = key.lstrip("+").strip()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return (key, value) if key else None


def parse_value(text: Any) -> Any:
    """An override value as a number when it is one (so 0.5 < 2 < 10 sort numerically), else as is."""
    if isinstance(text, str) and _NUMBER.match(text.strip()):
        number = float(text)
        return int(number) if re.fullmatch(r"[+-]?\d+", text.strip()) else number
    return text


def values_equal(a: Any, b: Any) -> bool:
    """Factor values compared as the user means them: ``"1"``, ``1`` and ``1.0`` are the same."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    pa, pb = parse_value(a), parse_value(b)
    if isinstance(pa, (int, float, np.number)) and isinstance(pb, (int, float, np.number)):
        return float(pa) == float(pb)
    return str(pa) == str(pb)


def is_missing(value: Any) -> bool:
    """``None``/NaN/``pd.NA``: a run that did not set this factor."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and np.isnan(value)


def _factor_column(values: Sequence[Any]) -> pd.Series:
    """A numeric column when every present value is a number (integers stay integers), else text."""
    present = [v for v in values if not is_missing(v)]
    parsed = [parse_value(v) for v in present]
    if present and all(isinstance(p, (int, float)) for p in parsed):
        if all(isinstance(p, int) for p in parsed):
            return pd.Series([None if is_missing(v) else parse_value(v) for v in values], dtype="Int64")
        return pd.Series([np.nan if is_missing(v) else float(parse_value(v)) for v in values], dtype="float64")
    return pd.Series([None if is_missing(v) else str(v) for v in values], dtype=object)


# --------------------------------------------------------------------------- one run


def _flatten(prefix: str, tree: Any, out: dict[str, float]) -> None:
    """Nested metric dicts -> ``prefix/a/b`` keys; non-numbers become NaN rather than crash a report."""
    if isinstance(tree, Mapping):
        for key in sorted(tree):
            _flatten(f"{prefix}/{key}", tree[key], out)
        return
    try:
        out[prefix] = float(tree) if tree is not None else float("nan")
    except (TypeError, ValueError):
        out[prefix] = float("nan")


def _hydra_overrides(run_dir: Path) -> list[str]:
    """The overrides Hydra saved for a job (to name a run that never wrote results)."""
    path = run_dir / HYDRA_DIR / "overrides.yaml"
    try:
        import yaml

        loaded = yaml.safe_load(path.read_text())
    except Exception:  # noqa: BLE001 - a label for a broken run must never break the report
        return []
    return [str(x) for x in loaded] if isinstance(loaded, list) else []


def _load(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run's results, or ``(None, reason)`` saying why they cannot be used."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return None, "no results.json (still running, crashed, or killed before finishing)"
    try:
        res = read_results(run_dir)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable results.json ({type(exc).__name__})"
    if not isinstance(res, dict):
        return None, "unreadable results.json (not a JSON object)"
    fmt = res.get("format", FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        return None, f"unsupported results format {fmt!r} (this report reads format {FORMAT_VERSION})"
    status = res.get("status")
    if status == "failed":
        error = str(res.get("error") or "no error message").strip().splitlines()
        return res, f"failed: {error[0] if error else 'no error message'}"
    if status != "complete":
        return res, f"status {status!r}, not 'complete'"
    return res, None


def _row(res: Mapping[str, Any], run_dir: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A flat row for one complete run, and its factors (override key -> raw value)."""
    factors: dict[str, str] = {}
    for text in res.get("overrides") or []:
        parsed = parse_override(str(text))
        if parsed and parsed[0] != "seed":
            factors[parsed[0]] = parsed[1]
    timing = res.get("timing") or {}
    row: dict[str, Any] = {
        "seed": res.get("seed"),
        "status": res.get("status"),
        "config_hash": res.get("config_hash"),
        "train_samples_per_second": _number(timing.get("train_samples_per_second")),
        "num_parameters": _number(res.get("num_parameters")),
        "run_dir": run_dir,
    }
    metrics: dict[str, float] = {}
    for split in ("test", "val"):
        _flatten(split, (res.get("metrics") or {}).get(split, {}), metrics)
    row.update(metrics)
    return row, factors


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------- derived metrics

TASK_MEAN = "mean"


def add_task_mean(collection: Collection, split: str, metric: str) -> tuple[str, list[str]]:
    """Add the column ``<split>/mean/<metric>`` to ``collection.runs``; return it and warnings.

    A run's value is the mean of ``metric`` over every task of that split that logged it (a key
    ``metric`` in ``metrics[split][task]`` of its ``results.json``) — computed per run, before any
    aggregation, so the std over seeds, the baseline test and the paired wins all see per-run
    values. A run that logged the metric as a non-number (NaN, a diverged loss) for one of its
    tasks gets NaN rather than a mean of its other tasks, which would flatter it; a run with no
    task logging it gets NaN too. Runs averaging different task sets are not comparable, so that
    is reported as a warning. Raises ``ValueError`` when no run logged ``metric`` for any task of
    ``split``, or when a task is itself named ``mean``.
    """
    column = f"{split}/{TASK_MEAN}/{metric}"
    if column in collection.derived:
        return column, []
    if column in collection.runs.columns:
        raise ValueError(f"cannot add {column!r}: a task is named {TASK_MEAN!r}")
    values: list[float] = []
    task_sets: dict[tuple[str, ...], int] = {}
    non_finite = 0
    for run_dir in collection.runs["run_dir"].tolist():
        tree = ((collection.results.get(run_dir) or {}).get("metrics") or {}).get(split) or {}
        tasks = tuple(sorted(str(t) for t, m in tree.items()
                             if isinstance(m, Mapping) and metric in m and not isinstance(m[metric], Mapping)))
        task_sets[tasks] = task_sets.get(tasks, 0) + 1
        numbers = [_number(tree[t][metric]) for t in tasks]
        if numbers and all(np.isfinite(numbers)):
            values.append(math.fsum(numbers) / len(numbers))  # exact sum: task order cannot matter
        else:
            non_finite += bool(numbers)
            values.append(float("nan"))
    tasks_seen = sorted({t for ts in task_sets for t in ts})
    if not tasks_seen:
        logged = sorted({c.rsplit("/", 1)[-1] for c in collection.metric_columns(split) if c.count("/") == 2})
        raise ValueError(f"no task of the {split} split logged {metric!r}; metrics there: {logged}")
    warnings = []
    if len(task_sets) > 1:
        listed = "; ".join(f"{','.join(ts) or '(none)'}: {count} run(s)" for ts, count in sorted(task_sets.items()))
        warnings.append(f"{column} averages different tasks in different runs ({listed}); those means are "
                        "not comparable")
    if non_finite:
        warnings.append(f"{column}: {non_finite} run(s) logged a non-number {metric} for some task; "
                        "their task mean is left out")
    collection.runs[column] = pd.Series(values, index=collection.runs.index, dtype="float64")
    collection.derived[column] = tasks_seen
    return column, warnings


# --------------------------------------------------------------------------- all runs


def collect(paths: Iterable[str | os.PathLike]) -> Collection:
    """Load every run under ``paths`` into a :class:`Collection`.

    Of complete runs sharing ``config_hash`` and ``seed`` the first found is kept — from the path
    given first, else the folder sorting first (deterministic: never file times) — so put the sweep
    you trust first; the others are listed in ``duplicates``. A failed run whose config and seed
    also completed elsewhere is still listed in ``problems``, with a note saying it was superseded,
    so a re-run sweep's history stays visible.
    """
    paths = [str(p) for p in paths]
    rows: list[dict[str, Any]] = []
    factor_rows: list[dict[str, str]] = []
    problems: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    kept_by_key: dict[tuple[str, Any], str] = {}
    raw: dict[str, dict[str, Any]] = {}
    failed_keys: list[tuple[int, tuple[str, Any]]] = []

    for run_dir in find_run_dirs(paths):
        name = run_dir.as_posix()
        res, reason = _load(run_dir)
        if reason is not None:
            overrides = (res or {}).get("overrides") or _hydra_overrides(run_dir)
            status = (res or {}).get("status") or "missing"
            problems.append({"run_dir": name, "status": str(status), "reason": reason,
                             "overrides": " ".join(str(o) for o in overrides)})
            if res and res.get("config_hash"):
                failed_keys.append((len(problems) - 1, (res["config_hash"], res.get("seed"))))
            continue
        assert res is not None
        key = (res.get("config_hash"), res.get("seed"))
        if key[0] is not None and key in kept_by_key:
            duplicates.append({"run_dir": name, "kept": kept_by_key[key],
                               "config_hash": key[0], "seed": key[1]})
            continue
        if key[0] is not None:
            kept_by_key[key] = name
        row, factors = _row(res, name)
        rows.append(row)
        factor_rows.append(factors)
        raw[name] = dict(res)

    for index, key in failed_keys:
        if key in kept_by_key:
            problems[index]["reason"] += f" [superseded by complete run {kept_by_key[key]}]"

    return Collection(
        runs=_runs_frame(rows, factor_rows),
        problems=pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS)),
        duplicates=pd.DataFrame(duplicates, columns=list(DUPLICATE_COLUMNS)),
        factors=sorted({k for f in factor_rows for k in f}),
        results=raw,
        searched=paths,
    )


def _runs_frame(rows: list[dict[str, Any]], factor_rows: list[dict[str, str]]) -> pd.DataFrame:
    """Factor columns first (sorted), then the fixed columns, then sorted metric columns."""
    keys = sorted({k for f in factor_rows for k in f})
    clash = [k for k in keys if k in BASE_COLUMNS or k.startswith(("test/", "val/"))]
    if clash:
        raise ValueError(f"override keys {clash} clash with report columns; rename them in the config")
    metric_cols = sorted({k for r in rows for k in r if k not in BASE_COLUMNS})
    frame = pd.DataFrame(rows, columns=list(BASE_COLUMNS) + metric_cols)
    for col in metric_cols + ["train_samples_per_second", "num_parameters"]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    factors = {k: _factor_column([f.get(k) for f in factor_rows]).set_axis(frame.index) for k in keys}
    return pd.concat([pd.DataFrame(factors, index=frame.index), frame], axis=1)
