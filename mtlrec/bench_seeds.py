"""Seed stacking, side by side in one benchmark run: one seed alone, K seeds as K runs of their own
(``-m seed=range(K)``, one after another), and K seeds as one stacked model (``seeds=K``).

    python -m mtlrec.bench_seeds --root ../shared/data/census-income-kdd --seeds 10 --epochs 3

Every system is ``python -m mtlrec.train`` in its own process at the same number of threads, on
the Census table's protocol (``conf/experiment/census_mmoe_table.yaml``: batch 4096, Adam 0.004,
patience 5) with at most ``--epochs`` epochs, and the systems are interleaved within every repeat.
The table gives medians over repeats of the process's wall time (data loading, training,
validation and testing of every seed: what a user waits for), the training seconds
(``results.json``), their ratios to one seed's, peak RSS and the mean test AUC over the seeds.

The target the issue set — K = 10 stacked seeds in at most 3× one seed's wall time — assumes a
device left idle between kernel launches (a GPU, or a CPU thread waiting on Python). Where the
step is already bound by arithmetic (a CPU core at batch 4096), stacking can only save the
per-step overhead, and this benchmark says how much that is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mtlrec.bench import _run

PROTOCOL = ["data=census_income", "data.loader.batch_size=4096", "optimizer.lr=0.004",
            "callbacks.early_stopping.patience=5", "logger=none", "console.progress_bar=false"]


def _train(args: Sequence[str], threads: int, folder: Path, multirun: bool) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one ``mtlrec.train`` process."""
    where = f"hydra.sweep.dir={folder}" if multirun else f"hydra.run.dir={folder}"
    started = time.perf_counter()
    _, rss = _run([sys.executable, "-m", "mtlrec.train", *(["-m"] if multirun else []), *args, where,
                   f"torch_threads={threads}"], threads)
    return time.perf_counter() - started, rss


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


def measure(system: str, common: Sequence[str], seeds: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        if system == "one":
            wall, rss = _train([*common, "seed=0"], threads, folder, multirun=False)
        elif system == "separate":
            wall, rss = _train([*common, f"seed=range({seeds})"], threads, folder, multirun=True)
        else:
            wall, rss = _train([*common, "seed=0", f"seeds={seeds}"], threads, folder, multirun=False)
        records = _records(folder)
    expected = 1 if system == "one" else seeds
    if len(records) != expected or any(r["status"] != "complete" for r in records):
        raise RuntimeError(f"{system}: {len(records)} complete records, expected {expected}")
    main = records[0]["main_task"]
    train = records[0]["timing"]["train_seconds"] if system == "stacked" else sum(
        r["timing"]["train_seconds"] for r in records)
    return {"wall": wall, "train": train, "rss": rss,
            "auc": statistics.fmean(r["metrics"]["test"][main]["auc"] for r in records)}


LABELS = {"one": "one seed", "separate": "K runs of their own", "stacked": "K seeds stacked (seeds=K)"}


def table(results: dict[str, list[dict]], seeds: int) -> str:
    med = {s: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for s, runs in results.items()}
    one = med["one"]
    rows = [f"K = {seeds}; medians of {len(results['one'])} repeat(s)",
            f"| system | wall s | × one seed | train s | × one seed | peak RSS MiB | mean test AUC (main) |",
            "|---|---|---|---|---|---|---|"]
    for system, m in med.items():
        rows.append(f"| {LABELS[system].replace('K', str(seeds))} | {m['wall']:.1f} | {m['wall'] / one['wall']:.2f} | "
                    f"{m['train']:.1f} | {m['train'] / one['train']:.2f} | {m['rss']:.0f} | {m['auc']:.4f} |")
    if "separate" in med and "stacked" in med:
        rows.append(f"\nstacked / separate: wall {med['stacked']['wall'] / med['separate']['wall']:.2f}, "
                    f"train {med['stacked']['train'] / med['separate']['train']:.2f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the Census-Income (KDD) folder")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="mmoe")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every system")
    args = parser.parse_args(argv)
    common = [*PROTOCOL, f"arch={args.arch}", f"data.root={Path(args.root).resolve()}",
              f"trainer.max_epochs={args.epochs}", *args.overrides]
    results: dict[str, list[dict]] = {s: [] for s in LABELS}
    for repeat in range(args.repeats):
        for system in LABELS:  # interleaved
            results[system].append(measure(system, common, args.seeds, args.threads))
            print(f"repeat {repeat + 1}: {system}: {results[system][-1]}", flush=True)
    print(f"\n{args.arch}, {args.threads} thread(s), at most {args.epochs} epochs")
    print(table(results, args.seeds))


if __name__ == "__main__":
    main()
