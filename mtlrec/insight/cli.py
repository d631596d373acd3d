"""``mtlrec-explain RUN_DIR...``: what finished runs learned, as tables and figures.

    mtlrec-explain outputs/2026-12-03/10-00-00                 # one run
    mtlrec-explain multirun/census_insight/* --out explain/    # a sweep: per model, across its seeds

For every run, with its own preprocessing and best checkpoint, on the validation split (``--split
test`` when asked):

* **feature importance per task** by permutation (:mod:`mtlrec.insight.importance`): a table and a
  bar plot per task, and a feature × task matrix that says which inputs matter to every task and
  which to one (``--importance none`` skips it; ``--group name=a,b`` permutes columns together);
* **task relations** (:mod:`mtlrec.insight.relations`): label and prediction correlation per task
  pair, and each model's gain over single-task training per task (test metrics of the runs);
* what the runs recorded while training: **gate utilisation** at the best epoch and the
  **expert-collapse check** (a gate × expert heatmap per model, averaged over its runs), and the
  **task-gradient conflict** (a plot over training; a pairwise matrix for more than two tasks).

Runs are grouped into *models* by architecture (and ``label``, when set); figures and means are
per model. Everything goes to ``--out`` (EXPLAIN.md, explain.json, figures), atomically; stdout
gets the Markdown.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtlrec.insight import gates as gate_stats
from mtlrec.insight import importance as imp
from mtlrec.insight import plots
from mtlrec.insight.relations import gain_over_single_task, mean_by, task_relations
from mtlrec.training.results import read_results, write_json_atomic

PROG = "mtlrec-explain"


class ExplainError(ValueError):
    """A run that cannot be explained (unfinished, another dataset); one line."""


def model_name(record: dict) -> str:
    arch = record["config"]["arch"]["_target_"].rsplit(".", 1)[-1]
    label = record["config"].get("label")
    return f"{arch} ({label})" if label else arch


def _load(run: str | Path):
    from mtlrec.predict import RunScorer

    record = read_results(run)
    if not record or record.get("status") != "complete":
        raise ExplainError(f"{run}: no complete results.json; explain finished runs only")
    return record, RunScorer(run)


def _frame(config: dict, split: str, max_rows: int | None, seed: int):
    from mtlrec.predict import run_split

    frame = run_split(config, split)
    if max_rows and len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    return frame.reset_index(drop=True)


def explain_run(run: str | Path, split: str = "val", repeats: int = 5, max_rows: int | None = None,
                seed: int = 0, groups: dict[str, list[str]] | None = None, importance: bool = True) -> dict:
    record, scorer = _load(run)
    frame = _frame(record["config"], split, max_rows, seed)
    table = scorer.preprocessor.transform(frame, split=split)
    logits = imp.predict_logits(scorer.architecture, table)
    result: dict[str, Any] = {"run": str(run), "name": Path(run).name, "model": model_name(record), "split": split,
                              "rows": len(frame), "main_task": scorer.schema.main_task,
                              "tasks": [t.name for t in scorer.schema.tasks],
                              "modes": {t: o.selection[1] for t, o in scorer.objectives.items()},
                              "metric_names": {t: o.selection[0] for t, o in scorer.objectives.items()},
                              "relations": task_relations(scorer.schema, scorer.objectives, logits, table),
                              "test": record.get("metrics", {}).get("test", {}), "gates": None,
                              "experts": None, "conflict": record.get("conflict")}
    if importance:
        chosen = imp.check_groups(groups or {}, scorer.schema)
        raw = imp.permutation_importance(scorer.architecture, scorer.preprocessor, scorer.objectives, frame,
                                         chosen, repeats=repeats, seed=seed, split=split)
        result["importance"] = {"baseline": raw["baseline"], "repeats": repeats, "groups": raw["groups"],
                                "summary": imp.summarise(raw)}
    try:  # the current architecture's expert names (a run from before they were stored has none)
        matrix = gate_stats.utilisation(record, scorer.architecture.gate_expert_labels())
    except (KeyError, TypeError) as err:
        raise ExplainError(f"{run}: results.json holds gate statistics in an older layout ({err}); train the run "
                           f"again to explain its gates") from err
    if record.get("gates") and matrix is None:
        raise ExplainError(f"{run}: results.json has no gate statistics of its best epoch {record.get('best_epoch')}")
    if matrix is not None:
        names, experts, values = matrix
        entry = gate_stats.best_entry(record)
        result["gates"] = {"names": names, "experts": experts, "matrix": values.tolist(),
                           "entropy_share": {n: entry["gates"][n]["entropy_share"] for n in names}}
        result["experts"] = entry.get("experts") or None
    return result


# -- the tables ------------------------------------------------------------------------------
def _pm(mean: float, std: float, n: int, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})" if n > 1 else f"{mean:.{digits}f}"


def _by_model(results: Sequence[dict]) -> dict[str, list[dict]]:
    models: dict[str, list[dict]] = {}
    for r in results:
        models.setdefault(r["model"], []).append(r)
    return models


def importance_section(model: str, runs: list[dict], top: int) -> tuple[str, dict]:
    """Each run's mean Δmetric per (group, task), then mean ± std over the model's runs (one run:
    over its repeats)."""
    tasks = runs[0]["tasks"]
    tasks = [t for t in tasks if t in runs[0]["importance"]["baseline"]]
    groups = list(runs[0]["importance"]["summary"])
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for g in groups:
        merged[g] = {}
        for t in tasks:
            values = [r["importance"]["summary"][g][t]["metric_mean"] for r in runs]
            losses = [r["importance"]["summary"][g][t]["loss_mean"] for r in runs]
            one = runs[0]["importance"]["summary"][g][t]
            merged[g][t] = {"metric_mean": float(np.mean(values)),
                            "metric_std": float(np.std(values, ddof=1)) if len(runs) > 1 else one["metric_std"],
                            "loss_mean": float(np.mean(losses)),
                            "loss_std": float(np.std(losses, ddof=1)) if len(runs) > 1 else one["loss_std"]}
    spec = imp.specificity(merged, tasks)
    main = runs[0]["main_task"] if runs[0]["main_task"] in tasks else tasks[0]
    order = sorted(groups, key=lambda g: merged[g][main]["metric_mean"], reverse=True)
    metric = {t: runs[0]["metric_names"][t] for t in tasks}
    base = {t: mean_by([(t, r["importance"]["baseline"][t]["value"]) for r in runs])[t] for t in tasks}
    spread = "over its runs" if len(runs) > 1 else f"over {runs[0]['importance']['repeats']} permutations"
    lines = [f"#### {model}: permutation importance on {runs[0]['split']} ({len(runs)} run(s), "
             f"{runs[0]['rows']:,} rows; mean ± std {spread})", "",
             "Baseline: " + ", ".join(f"{t} {metric[t]} {_pm(*base[t])}" for t in tasks) + ". "
             "Δmetric: how much worse the task's metric gets when the input is permuted (a drop for a metric to "
             "maximise, a rise for one to minimise; higher: the model relies on it more); Δloss: the rise of the "
             "task's loss.", "",
             "| input | " + " | ".join(f"{t}: Δ{metric[t]} | {t}: Δloss" for t in tasks) + " | matters to |",
             "|:--|" + "--:|" * (2 * len(tasks)) + ":--|"]
    for g in order[:top]:
        cells = [f"{merged[g][t]['metric_mean']:.4f} ± {merged[g][t]['metric_std']:.4f} | "
                 f"{merged[g][t]['loss_mean']:.4f} ± {merged[g][t]['loss_std']:.4f}" for t in tasks]
        lines.append(f"| {g} | " + " | ".join(cells) + f" | {spec[g]} |")
    if len(order) > top:
        rest = {s: sum(spec[g] == s for g in order[top:]) for s in set(spec[g] for g in order[top:])}
        lines.append("")
        tally = ", ".join(f"{n} {s}" for s, n in sorted(rest.items()))
        lines.append(f"{len(order) - top} more inputs below these: {tally} (all in explain.json).")
    counts = {s: sum(v == s for v in spec.values()) for s in ["shared", *tasks, "several", "none"]}
    lines += ["", "Inputs that matter (Δ > 2 std and > 5 % of the task's largest Δ): "
              + ", ".join(f"{k}: {v}" for k, v in counts.items() if v) + ".", ""]
    return "\n".join(lines), {"merged": merged, "specificity": spec}


def gates_section(model: str, runs: list[dict]) -> tuple[str, dict | None]:
    with_gates = [r for r in runs if r["gates"]]
    if not with_gates:
        return "", None
    names, experts = with_gates[0]["gates"]["names"], with_gates[0]["gates"]["experts"]
    same = [r for r in with_gates if r["gates"]["names"] == names and r["gates"]["experts"] == experts]
    with warnings.catch_warnings():  # a gate that does not see an expert: NaN in every run, NaN in the mean
        warnings.simplefilter("ignore", RuntimeWarning)
        matrix = np.nanmean(np.stack([np.asarray(r["gates"]["matrix"], dtype=float) for r in same]), axis=0)
    entropy = {n: mean_by([(n, r["gates"]["entropy_share"][n]) for r in same])[n] for n in names}
    left_out = f" of {len(with_gates)}, those with this gate layout" if len(same) < len(with_gates) else ""
    lines = [f"#### {model}: gate utilisation (validation, best epoch; mean over {len(same)} run(s){left_out})", "",
             "Each row: a gate's mean weight on each expert it mixes (·: an expert it does not see; the "
             "experts are those of the gate's own level), and its mean entropy as a share of log E.", "",
             "| gate | " + " | ".join(experts) + " | entropy / log E |", "|:--|" + "--:|" * (len(experts) + 1)]
    for g, name in enumerate(names):
        cells = ["·" if np.isnan(v) else f"{v:.3f}" for v in matrix[g]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_pm(*entropy[name], digits=3)} |")
    lines += ["", "Experts are interchangeable at initialisation, so each seed numbers them its own way: a column of "
              "this mean mixes different experts. The overlap below and the per-run heatmaps (`runs/`) do not depend "
              "on the numbering."]
    overlaps = [(pair, value) for r in same for pair, value in gate_overlaps(r["gates"]).items()]
    if overlaps:
        summary = mean_by(overlaps)
        lines += ["", "Overlap of two gates' expert use, Σ_e min(g_a,e, g_b,e) over the experts both see (1: the "
                  "same experts in the same proportions; 0: disjoint experts), mean over the runs: "
                  + "; ".join(f"{pair} {_pm(*summary[pair], digits=3)}" for pair in dict(overlaps)) + "."]
    layers: dict[str, list[float]] = {}
    collapsed: list[str] = []
    for r in same:
        for layer, rep in (r["experts"] or {}).items():
            if rep.get("max_similarity") is not None:
                layers.setdefault(layer, []).append(rep["max_similarity"])
            collapsed += [f"{r['name']}: {layer} experts {a} and {b}" for a, b in rep.get("collapsed", [])]
    if layers:
        lines += ["", "Expert-collapse check (the largest correlation between two experts' outputs on a validation "
                  "batch at the best epoch; ≥ 0.99 counts as collapsed): "
                  + "; ".join(f"{layer} {_pm(*mean_by([(layer, x) for x in v])[layer], digits=3)}"
                              for layer, v in layers.items())
                  + (". Collapsed: " + "; ".join(collapsed) if collapsed else ". No collapsed pair.")]
    return "\n".join(lines) + "\n", {"names": names, "experts": experts, "matrix": matrix}


def gate_overlaps(gates: dict) -> dict[str, float]:
    """Per pair of gates that share experts: ``Σ_e min(g_a,e, g_b,e)`` (a histogram intersection;
    invariant to the experts' numbering)."""
    matrix = np.asarray(gates["matrix"], dtype=float)
    names = gates["names"]
    out = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            both = ~np.isnan(matrix[i]) & ~np.isnan(matrix[j])
            if both.any():
                out[f"{a}~{names[j]}"] = float(np.minimum(matrix[i, both], matrix[j, both]).sum())
    return out


def conflict_section(model: str, runs: list[dict]) -> tuple[str, dict | None]:
    sampled = [r for r in runs if r["conflict"]]
    if not sampled:
        return "", None
    tasks = sampled[0]["conflict"]["tasks"]
    pairs = list(sampled[0]["conflict"]["pairs"])
    where = {"above_encoder": "the shared parameters above the input encoder",
             "encoder": "the input encoder (the only shared parameters: the cosine mostly says which categories the "
                        "tasks' rows share)"}.get(sampled[0]["conflict"].get("parameters"), "the shared parameters")
    lines = [f"#### {model}: task-gradient conflict (cosine of the task losses' gradients on {where}, "
             f"every {sampled[0]['conflict']['every']} steps; mean over {len(sampled)} run(s))", "",
             "| pair a~b | mean cosine | share of samples < 0 | ‖g_a‖ / ‖g_b‖ (median over samples) "
             "| samples per run |",
             "|:--|--:|--:|--:|--:|"]
    for pair in pairs:
        a, b = (tasks.index(t) for t in pair.split("~"))
        cos = mean_by([(pair, r["conflict"]["pairs"][pair]["mean_cosine"]) for r in sampled]).get(pair)
        neg = mean_by([(pair, r["conflict"]["pairs"][pair]["share_negative"]) for r in sampled]).get(pair)
        # ‖g_a‖/‖g_b‖: which task's gradient dominates the shared update (median over a run's samples
        # where both gradients are non-zero)
        ratios = [[s["norm"][a] / s["norm"][b] for s in r["conflict"]["samples"]
                   if s["norm"][a] > 0 and s["norm"][b] > 0] for r in sampled]
        ratio = mean_by([(pair, float(np.median(v)) if v else None) for v in ratios]).get(pair)
        count = int(np.median([len(r["conflict"]["samples"]) for r in sampled]))
        cells = [_pm(*c, digits=d) if c else "–" for c, d in ((cos, 3), (neg, 3), (ratio, 2))]
        lines.append(f"| {pair} | " + " | ".join(cells) + f" | {count} |")
    def cosine(s, i, j) -> float:
        value = s["cosine"][i][j]
        return float("nan") if value is None else value

    curves = {}
    for pair in pairs:
        i, j = (tasks.index(t) for t in pair.split("~"))
        curves[pair] = [([s["step"] for s in r["conflict"]["samples"]],
                         [cosine(s, i, j) for s in r["conflict"]["samples"]]) for r in sampled]
    with warnings.catch_warnings():  # a pair without a defined cosine stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        matrix = np.nanmean([np.nanmean([[[cosine(s, i, j) for j in range(len(tasks))] for i in range(len(tasks))]
                                         for s in r["conflict"]["samples"]], axis=0) for r in sampled], axis=0)
    return "\n".join(lines) + "\n", {"tasks": tasks, "curves": curves, "matrix": matrix}


def relations_section(models: dict[str, list[dict]]) -> str:
    lines = ["### Task relations", "",
             "Label and prediction correlation (Pearson, on the rows in both tasks' sample spaces of the explained "
             "split), mean over each model's runs.", "",
             "| model | pair | label correlation | prediction correlation |", "|:--|:--|--:|--:|"]
    any_pair = False
    for model, runs in models.items():
        for i, rel in enumerate(runs[0]["relations"]):
            pair = rel["pair"]
            label = mean_by([(pair, r["relations"][i]["label_correlation"]) for r in runs]).get(pair)
            pred = mean_by([(pair, r["relations"][i]["prediction_correlation"]) for r in runs]).get(pair)
            lines.append(f"| {model} | {pair} | {_pm(*label, digits=3) if label else '–'} | "
                         f"{_pm(*pred, digits=3) if pred else '–'} |")
            any_pair = True
    if not any_pair:
        lines.append("| – | no pair of binary or scalar tasks | – | – |")
    first = next(iter(models.values()))[0]
    tasks, metric = first["tasks"], first["metric_names"]
    means = {m: {t: float(np.mean([r["test"][t][metric[t]] for r in runs if metric[t] in r["test"].get(t, {})]))
                 for t in tasks if any(metric[t] in r["test"].get(t, {}) for r in runs)}
             for m, runs in models.items()}
    gains = gain_over_single_task(means, first["modes"])
    if gains:
        lines += ["", "Gain over single-task training (relative, test metric means over the runs; positive: better "
                  "than SingleTask):", "", "| model | " + " | ".join(f"{t} {metric[t]}" for t in tasks) + " |",
                  "|:--|" + "--:|" * len(tasks)]
        lines.append("| SingleTask | " + " | ".join(f"{means['SingleTask'].get(t, float('nan')):.4f}" for t in tasks)
                     + " |")
        for model, per_task in gains.items():
            cells = [f"{means[model][t]:.4f} ({per_task[t]:+.2%})" if t in per_task else "–" for t in tasks]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(results: Sequence[dict], out: Path | None, top: int = 15) -> tuple[str, dict]:
    models = _by_model(results)
    parts = [f"## What the models learned ({len(results)} run(s), {len(models)} model(s))", ""]
    summary: dict[str, Any] = {"runs": [r["name"] for r in results], "models": {}}
    for model, runs in models.items():
        entry: dict[str, Any] = {"runs": [r["name"] for r in runs]}
        parts.append(f"### {model}")
        parts.append("")
        if all("importance" in r for r in runs):
            text, merged = importance_section(model, runs, top)
            parts.append(text)
            entry["importance"] = merged
            if out is not None:
                tasks = list(merged["merged"][next(iter(merged["merged"]))])
                for t in tasks:
                    plots.plot_importance(merged["merged"], t, runs[0]["metric_names"][t], out,
                                          f"importance_{model}_{t}", spread="runs" if len(runs) > 1 else "permutations")
                plots.plot_feature_task(merged["merged"], tasks, f"{model}: share of each task's importance", out,
                                        f"importance_matrix_{model}", top=top)
        text, gates = gates_section(model, runs)
        if text:
            parts.append(text)
            entry["gates"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in gates.items()}
            if out is not None:
                plots.plot_utilisation(gates["matrix"], gates["names"], gates["experts"],
                                       f"{model}: mean gate weight per expert (validation; mean of {len(runs)} runs)",
                                       out, f"gates_{model}")
                for r in runs:  # and one per run
                    if r["gates"]:
                        plots.plot_utilisation(np.asarray(r["gates"]["matrix"], dtype=float), r["gates"]["names"],
                                               r["gates"]["experts"], f"{r['name']}: mean gate weight per expert",
                                               out / "runs", f"gates_{r['name']}")
        text, conflict = conflict_section(model, runs)
        if text:
            parts.append(text)
            entry["conflict_matrix"] = conflict["matrix"].tolist()
            if out is not None:
                plots.plot_conflict(conflict["curves"], f"{model}: task-gradient cosine over training", out,
                                    f"conflict_{model}")
                if len(conflict["tasks"]) > 2:
                    plots.plot_pair_matrix(conflict["matrix"], conflict["tasks"], f"{model}: mean gradient cosine",
                                           out, f"conflict_matrix_{model}")
        summary["models"][model] = entry
    parts.append(relations_section(models))
    return "\n".join(parts), summary


def _groups(specs: Sequence[str]) -> dict[str, list[str]]:
    groups = {}
    for spec in specs:
        name, sep, cols = spec.partition("=")
        if not sep or not name or not cols:
            raise ExplainError(f"--group {spec!r}: write NAME=COLUMN,COLUMN")
        groups[name] = [c for c in cols.split(",") if c]
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (results.json and the best checkpoint)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="where inputs are permuted and relations measured (default val: test stays unseen)")
    parser.add_argument("--repeats", type=int, default=5, help="permutations per input (default 5)")
    parser.add_argument("--max-rows", type=int, default=None, help="a seeded sample of the split's rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", action="append", default=[], help="NAME=COL,COL: permute these inputs together")
    parser.add_argument("--importance", choices=("permutation", "none"), default="permutation")
    parser.add_argument("--top", type=int, default=15, help="inputs shown per table (all are in explain.json)")
    parser.add_argument("--out", help="folder for EXPLAIN.md, explain.json and the figures")
    args = parser.parse_args(argv)
    from mtlrec.training.console import quiet_third_party

    quiet_third_party()  # an error stays one line
    try:
        groups = _groups(args.group)
        results = [explain_run(run, args.split, args.repeats, args.max_rows, args.seed, groups,
                               importance=args.importance != "none") for run in args.runs]
        tasks = {tuple(r["tasks"]) for r in results}
        if len(tasks) > 1:
            raise ExplainError(f"the runs have different tasks {sorted(tasks)}; explain runs of one dataset together")
        out = Path(args.out) if args.out else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        text, summary = render(results, out, args.top)
    except (ExplainError, FileNotFoundError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    command = " ".join([PROG, *(argv if argv is not None else sys.argv[1:])])
    print(text)
    if out is not None:
        from mtlrec.report.output import write_text_atomic

        write_text_atomic(out / "EXPLAIN.md", f"# Explained runs\n\nGenerated by `{command}`.\n\n{text}")
        write_json_atomic(out / "explain.json", {"summary": summary, "runs": results})
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    cli()
