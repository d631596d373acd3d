"""Data-parallel scaling on CPU, side by side in one run: one process against two (Lightning DDP,
gloo) on the same cores, at the same global batch.

    python -m mtlrec.bench_scaling --root ../shared/data/census-income-kdd --repeats 3

The setting is :mod:`mtlrec.bench`'s (MMoE on Census-Income group 1, embeddings of 4, 8 experts ×
16, towers of 8, Adam 1e-3, 5 epochs), with a global batch of 1024 rows:

* ``1 process × 1 thread``: ``data.loader.batch_size=1024``;
* ``1 process × 2 threads``: the same, with ``torch_threads=2`` (intra-op parallelism);
* ``2 processes × 1 thread``: ``trainer=ddp``, ``data.loader.batch_size=512`` per process.

Each configuration is its own ``mtlrec-train`` process tree; repeat ``r`` trains every
configuration with ``seed=r``, interleaved. The table gives medians over repeats of the global
training samples/s (validation excluded), the ratio to one process on one thread and the wall
time of the whole run (start-up, validation and, for DDP, the process launch included), and the
test AUCs as mean ± std over the seeds: one seed gives the same global batches to every
configuration, so the AUCs should agree to float noise seed by seed, and their spread over seeds
is the yardstick for "the same".
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mtlrec.bench import SIZES, _run

CONFIGURATIONS = {
    "1 process × 1 thread": (1, ["data.loader.batch_size=1024", "torch_threads=1"]),
    "1 process × 2 threads": (2, ["data.loader.batch_size=1024", "torch_threads=2"]),
    "2 processes × 1 thread (DDP)": (1, ["trainer=ddp", "data.loader.batch_size=512", "torch_threads=1"]),
}


def train(root: str, threads: int, overrides: Sequence[str], epochs: int, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        _run([sys.executable, "-m", "mtlrec.train", *SIZES, *overrides, f"trainer.max_epochs={epochs}",
              f"seed={seed}", f"data.root={root}", "trainer.accelerator=cpu", f"hydra.run.dir={folder}",
              "console.progress_bar=false", "logger=none"], threads)
        wall = time.perf_counter() - started
        record = json.loads((Path(folder) / "results.json").read_text())
    return {"samples_per_second": record["timing"]["train_samples_per_second"], "wall_seconds": wall,
            "test_auc": {t: m["auc"] for t, m in record["metrics"]["test"].items()}}


def table(samples: dict[str, list[dict]], repeats: int, epochs: int) -> str:
    base = statistics.median(r["samples_per_second"] for r in samples["1 process × 1 thread"])
    lines = ["| configuration | samples/s | × 1 process, 1 thread | wall s | test AUC income / marital |",
             "|:--|--:|--:|--:|:--|"]
    for name, runs in samples.items():
        speed = statistics.median(r["samples_per_second"] for r in runs)
        wall = statistics.median(r["wall_seconds"] for r in runs)
        auc = " / ".join(_mean_std([r["test_auc"].get(t, float("nan")) for r in runs]) for t in ("income", "marital"))
        lines.append(f"| {name} | {speed:,.0f} | {speed / base:.2f} | {wall:.0f} | {auc} |")
    return "\n".join(lines) + (f"\n\nMedians over {repeats} interleaved repeat(s) (seeds 0–{repeats - 1}); AUC: mean ± "
                               f"std over the seeds; {epochs} epochs each.")


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the census-income-kdd folder")
    parser.add_argument("--repeats", type=int, default=2, help="repeat r trains with seed=r")
    parser.add_argument("--epochs", type=int, default=5, help="the setting's 5; fewer only to check that it runs")
    args = parser.parse_args(argv)
    samples: dict[str, list[dict]] = {name: [] for name in CONFIGURATIONS}
    for seed in range(args.repeats):
        for name, (threads, overrides) in CONFIGURATIONS.items():
            samples[name].append(train(args.root, threads, overrides, args.epochs, seed))
    print(table(samples, args.repeats, args.epochs))


if __name__ == "__main__":
    main()
