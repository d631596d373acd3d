"""Does the fast form of the Census table (bf16-mixed training, ``compile=true``) give the same
table as the float32 one? Per task group and architecture: both forms' mean ± std test AUC over
their seeds, the difference, and Welch's p; then each form's training seconds per run.

    python experiments/census_mmoe_table/compare_fast.py REFERENCE_RUNS FAST_RUNS [--out FAST.md]

Both folders are archives of ``run.sh`` (or sweep folders). The Markdown is generated, never edited.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mtlrec.report.collect import collect
from mtlrec.report.output import write_text_atomic
from mtlrec.report.stats import summarize, welch_p

ROWS = ["data.group", "arch"]


def _collect(path: str):
    collection = collect([path])
    if collection.runs.empty:
        raise SystemExit(f"{path}: no complete runs (give run.sh's runs/ archive or its sweep folder)")
    return collection


def compare(reference_path: str, fast_path: str) -> str:
    collections = _collect(reference_path), _collect(fast_path)
    reference, fast = (c.runs for c in collections)
    metrics = sorted(c for c in reference.columns if c.startswith("test/") and c.endswith("/auc"))
    lines = ["| group | architecture | task | float32 | bf16-mixed + compile | difference | Welch p |",
             "|---|---|---|---|---|---|---|"]
    tests, below = 0, 0
    for (group, arch), ref in reference.groupby(ROWS, sort=True):
        new = fast[(fast["data.group"] == group) & (fast["arch"] == arch)]
        for metric in metrics:
            a = ref[metric].dropna().to_numpy()
            b = new[metric].dropna().to_numpy() if metric in new else np.empty(0)
            if not len(a):
                continue
            sa, sb = summarize(a), summarize(b)
            p = welch_p(a, b) if len(b) > 1 else float("nan")
            tests, below = tests + (p == p), below + (p < 0.05)
            task = metric.split("/")[1]
            lines.append(f"| {group} | {arch} | {task} | {sa.mean:.4f} ± {sa.std:.4f} ({sa.n}) | "
                         f"{sb.mean:.4f} ± {sb.std:.4f} ({sb.n}) | {sb.mean - sa.mean:+.4f} | {p:.2f} |")
    chance = f"by chance alone, about {0.05 * tests:.1f} would"
    lines += ["", f"{below} of {tests} differences have p < 0.05 ({chance}).", "",
              "| form | runs | training seconds per run, median | mean |", "|---|---|---|---|"]
    for name, collection in zip(("float32", "bf16-mixed + compile"), collections):
        # each run's own record of its training time (timing.train_seconds in results.json)
        seconds = [collection.results[d]["timing"]["train_seconds"] for d in collection.runs["run_dir"]]
        lines.append(f"| {name} | {len(seconds)} | {np.median(seconds):.1f} | {np.mean(seconds):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference")
    parser.add_argument("fast")
    parser.add_argument("--out", help="also write the Markdown here")
    args = parser.parse_args(argv)
    text = compare(args.reference, args.fast)
    if args.out:
        write_text_atomic(args.out, f"# Census table: float32 against bf16-mixed + compile\n\n{text}")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
