"""Does the probe's ranking of source domains predict the transfer gain that training measured?

    python -m mtlrec.transfer.gains experiments/retail_transfer/runs --probe probe.json \\
        [--metric recommend/auc] [--baseline target_only]

Runs are told apart by their ``label`` (``source_<name>``, ``init_<name>``, ``target_only`` in the
retail transfer recipe). For each architecture and candidate source, the gain is the test metric
of ``init_<name>`` minus that of the baseline arm of the same seed (paired), as mean ± std over
seeds. Beside it: the probe's proxy A-distance, label distance and training rows
(``mtlrec-transfer-probe --json``), and Spearman's rank correlation between each probe column and
the gain. With a handful of sources the correlation is weak evidence whatever its value; the
table, not ρ, is the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mtlrec.report.collect import find_run_dirs
from mtlrec.training.results import RESULTS_FILE


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (average ranks for ties); NaN with fewer than 3 pairs or a constant side."""
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else float("nan")


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def measured_gains(runs: str | Path, metric: str, baseline: str) -> dict[str, dict[str, list[float]]]:
    """arch -> source name -> per-seed gains of ``init_<source>`` over ``baseline``."""
    task, name = metric.split("/")
    value: dict[tuple[str, int, str], float] = {}
    for folder in find_run_dirs([runs]):
        record = json.loads((folder / RESULTS_FILE).read_text())
        if record.get("status") != "complete" or not record["config"].get("label"):
            continue
        arch = record["config"]["arch"]["_target_"].rsplit(".", 1)[-1]
        value[(arch, record["seed"], record["config"]["label"])] = record["metrics"]["test"][task][name]
    gains: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (arch, seed, label), v in sorted(value.items()):
        base = value.get((arch, seed, baseline))
        if label.startswith("init_") and base is not None:
            gains[arch][label.removeprefix("init_")].append(v - base)
    return gains


def table(gains: dict[str, dict[str, list[float]]], probe_rows: list[dict], metric: str) -> str:
    probe = {r["source"]: r for r in probe_rows}
    lines = []
    for arch, by_source in gains.items():
        names = [s for s in by_source if s in probe]
        lines += [f"\n**{arch}**: gain in test {metric} of `init_from` the source over target-only (paired by seed)\n",
                  "| source | train rows | mean label TV | proxy A-distance | gain, mean ± std (n) |",
                  "|---|---|---|---|---|"]
        for s in sorted(names, key=lambda s: probe[s]["proxy_a_distance"]):
            g = by_source[s]
            spread = statistics.stdev(g) if len(g) > 1 else float("nan")
            lines.append(f"| {s} | {probe[s]['train_rows']:,} | {probe[s]['mean_label_distance']:.3f} | "
                         f"{probe[s]['proxy_a_distance']:.3f} | {statistics.fmean(g):+.4f} ± {spread:.4f} ({len(g)}) |")
        mean_gain = [statistics.fmean(by_source[s]) for s in names]
        rho = {col: spearman([float(probe[s][key]) for s in names], mean_gain)
               for col, key in (("train rows", "train_rows"), ("label TV", "mean_label_distance"),
                                ("proxy A-distance", "proxy_a_distance"))}
        lines.append("\nSpearman ρ with the mean gain (a good predictor: + for train rows, − for the distances): "
                     + ", ".join(f"{col} {r:+.2f}" for col, r in rho.items()) + f" ({len(names)} sources)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlrec.transfer.gains", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", help="a folder of results.json files (an archive, or a sweep)")
    parser.add_argument("--probe", required=True, help="the rows of mtlrec-transfer-probe --json")
    parser.add_argument("--metric", default="recommend/auc")
    parser.add_argument("--baseline", default="target_only", help="the label of the arm gains are measured against")
    args = parser.parse_args(argv)
    gains = measured_gains(args.runs, args.metric, args.baseline)
    if not gains:
        print(f"no init_<source> runs with a {args.baseline} run of the same seed under {args.runs}", file=sys.stderr)
        return 2
    print(table(gains, json.loads(Path(args.probe).read_text()), args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
