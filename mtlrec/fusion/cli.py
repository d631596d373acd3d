"""``mtlrec-fuse RUN_DIR...``: fuse the best checkpoints of finished runs and compare the fusions
with their members, per task, on test.

    mtlrec-fuse multirun/womens_reviews/arch=mmoe,seed=* --out fusion/   # five seeds of one model
    mtlrec-fuse run_a run_b run_c --rules mean,stacking                   # different architectures

Each member is scored with its own preprocessing and best checkpoint (:class:`~mtlrec.predict.RunScorer`)
on the validation and test rows of the dataset they were all trained on (their ``data`` configs
must agree, locations aside). Every rule of :mod:`mtlrec.fusion.rules` that applies to a task
fuses their scores; validation scores are used only where a rule needs them (``weighted``:
the members' validation metrics; ``stacking``: its fit), test labels only to measure. The table
has one row per member and per rule, one column per task metric, written as Markdown, CSV and JSON
(atomically) under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlrec.fusion import rules as fusion
from mtlrec.training.results import (
    read_results,
    without_location_keys,
    write_json_atomic,
)

PROG = "mtlrec-fuse"
SPLITS = ("val", "test")


# rules whose output ranks the rows without being a probability: their log loss would measure the
# scale of a rank, not calibration, so it is not reported ("–" in the table)
NOT_PROBABILITIES = ("rank", "vote")


class FusionError(ValueError):
    """Members that cannot be fused (another dataset, an unfinished run); one line."""


def _members(run_dirs: Sequence[str | Path]):
    from mtlrec.predict import RunScorer

    scorers, configs = {}, []
    for run in run_dirs:
        record = read_results(run)
        if not record or record.get("status") != "complete":
            raise FusionError(f"{run}: no complete results.json; fuse finished runs only")
        scorers[Path(run).name or str(run)] = RunScorer(run)
        configs.append(record["config"])
    data = [without_location_keys({"data": c["data"]}) for c in configs]
    if any(d != data[0] for d in data[1:]):
        names = list(scorers)
        first = next(i for i, d in enumerate(data) if d != data[0])
        raise FusionError(f"{names[first]} was trained on other data than {names[0]} (their data configs differ); "
                          f"fuse runs of one dataset")
    return scorers, configs[0]


def _split_frames(config: dict[str, Any]):
    from mtlrec.predict import run_split

    return {s: run_split(config, s) for s in SPLITS}


def fuse(run_dirs: Sequence[str | Path], rule_names: Sequence[str] = fusion.RULES) -> list[dict[str, Any]]:
    """Rows ``{"name", "kind": member|fusion, "metrics": {task: {metric: value}}}`` on test."""
    unknown = sorted(set(rule_names) - set(fusion.RULES))
    if unknown:
        raise FusionError(f"--rules: unknown rule(s) {unknown}; the rules are {', '.join(fusion.RULES)}")
    if len(run_dirs) < 2:
        raise FusionError("give at least two runs to fuse")
    scorers, config = _members(run_dirs)
    frames = _split_frames(config)
    first = next(iter(scorers.values()))
    tables = {s: first.preprocessor.transform(frames[s], split=s) for s in SPLITS}
    scores = {s: {name: scorer.predict(frames[s]) for name, scorer in scorers.items()} for s in SPLITS}
    tasks = [t for t in first.schema.tasks if all(t.name in sc.objectives for sc in scorers.values())]
    rows: dict[str, dict[str, dict[str, float]]] = {name: {} for name in scorers}
    kinds = {name: "member" for name in scorers}
    for task in tasks:
        objective = first.objectives[task.name]
        stacked = {s: torch.stack([torch.as_tensor(scores[s][m][task.name]) for m in scorers]) for s in SPLITS}
        space = {s: _sample_space(tables[s], task.name) for s in SPLITS}
        labels = {s: tables[s].labels[task.name][space[s]] for s in SPLITS}
        inside = {s: stacked[s][:, space[s]] for s in SPLITS}
        for i, name in enumerate(scorers):
            rows[name][task.name] = _metrics(objective, inside["test"][i], labels["test"], task.kind)
        val_metric = [_metrics(objective, inside["val"][i], labels["val"], task.kind) for i in range(len(scorers))]
        for rule in rule_names:
            fused = _apply(rule, inside, labels["val"], val_metric, objective, task.kind)
            if fused is None:
                continue
            metrics = _metrics(objective, fused, labels["test"], task.kind)
            if rule in NOT_PROBABILITIES:  # ranks and vote shares order the rows but are no probabilities
                metrics = {name: value for name, value in metrics.items() if name != "logloss"}
            rows.setdefault(rule, {})[task.name] = metrics
            kinds[rule] = "fusion"
    return [{"name": name, "kind": kinds[name], "metrics": metrics} for name, metrics in rows.items()]


def _sample_space(table, task: str) -> Tensor:
    mask = table.masks.get(task)
    return mask if mask is not None else torch.ones(len(table), dtype=torch.bool)


def _apply(rule: str, inside: dict[str, Tensor], val_labels: Tensor, val_metric: list[dict[str, float]],
           objective, kind: str) -> Tensor | None:
    """The fused test scores of one rule; ``None`` where the rule does not apply to the task's kind."""
    test = inside["test"]
    if rule == "mean":
        return fusion.mean(test)
    if rule == "weighted":
        metric, mode = objective.selection
        values = torch.tensor([m[metric] for m in val_metric], dtype=torch.float64)
        return fusion.weighted(test, values if mode == "max" else 1.0 / values.clamp_min(fusion.EPS))
    if kind not in fusion.CLASSIFICATION + ("regression",):
        return None  # multilabel: only the averaging rules
    if rule == "rank":
        return fusion.rank(test, kind) if kind in fusion.CLASSIFICATION else None
    if rule == "vote":
        return fusion.vote(test, kind) if kind in fusion.CLASSIFICATION else None
    return fusion.fit_stacker(inside["val"], val_labels, kind)(test)


def _metrics(objective, scores: Tensor, labels: Tensor, kind: str) -> dict[str, float]:
    collection = objective.metrics()
    logits = fusion.to_logits(torch.as_tensor(scores).float(), kind)
    objective.update(collection, logits, labels)
    return {name: float(value) for name, value in objective.compute(collection).items()}


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = sorted({(t, m) for r in rows for t, ms in r["metrics"].items() for m in ms})
    head = ["run / rule", "kind", *[f"{t}/{m}" for t, m in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['metrics'][t][m]:.4f}" if m in r["metrics"].get(t, {}) else "–" for t, m in columns]
        lines.append("| " + " | ".join([r["name"], r["kind"], *cells]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with results.json and its best checkpoint)")
    parser.add_argument("--rules", default=",".join(fusion.RULES),
                        help=f"comma-separated, of {', '.join(fusion.RULES)}")
    parser.add_argument("--out", help="folder for fusion.md, fusion.csv and fusion.json (default: stdout only)")
    args = parser.parse_args(argv)
    from mtlrec.training.console import quiet_third_party

    quiet_third_party()  # an error stays one line
    try:
        rows = fuse(args.runs, [r for r in args.rules.split(",") if r])
    except (FusionError, FileNotFoundError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.out:
        from mtlrec.report.output import write_text_atomic

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "fusion.md", f"# Fused runs vs their members (test)\n\nGenerated by `{PROG} "
                          f"{' '.join(args.runs)} --rules {args.rules}`.\n\n{table}\n")
        columns = sorted({(t, m) for r in rows for t, ms in r["metrics"].items() for m in ms})
        csv = ["name,kind," + ",".join(f"{t}/{m}" for t, m in columns)]
        csv += [",".join([r["name"], r["kind"], *[repr(r["metrics"].get(t, {}).get(m, float("nan")))
                                                  for t, m in columns]]) for r in rows]
        write_text_atomic(out / "fusion.csv", "\n".join(csv) + "\n")
        write_json_atomic(out / "fusion.json", rows)
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    cli()
