"""Benchmark: training from a memory-mapped columnar cache of tens of millions of rows.

    python -m mtlrec.bench_outofcore --work /tmp/ooc --rows 20000000 --memory-rows 2000000

Generates synthetic impression logs as Parquet (``--rows`` training rows, 30 categorical fields
with vocabularies from 10 to 10⁶ ids, 10 numeric fields, ≈4 % clicks and ≈1 % of clicks
converting; validation and test files of ``--eval-rows``), converts them once into the columnar
cache (``data.out_of_core.enabled=true``), then trains one epoch of ESMM and of MMoE from it with
the real Trainer, and the same two models on an in-memory table of ``--memory-rows`` rows (the
same generator). Every phase runs in a process of its own, which reports its peak RSS; rows/s are
printed side by side with their ratio. Validation is off while timing, so the figures compare
training steps (gather included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtlrec.bench_weightings import compose_config, mtlrec_epoch_seconds
from mtlrec.build import build_datamodule

FIELDS, NUMERIC = 30, 10
VOCABULARIES = np.round(np.logspace(1, 6, FIELDS)).astype(np.int64)
TASKS = ("[{name: click, kind: binary, sample_space: impressions}, "
         "{name: cvr, kind: binary, label: conversion, mask: click, sample_space: clicked}, "
         "{name: ctcvr, kind: binary, label: ctcvr_label, sample_space: impressions}]")


def generate(path: Path, rows: int, seed: int, chunk: int = 1_000_000) -> None:
    """``rows`` impressions as one Parquet file, written chunk by chunk (never all in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        columns = {}
        for j, vocabulary in enumerate(VOCABULARIES):  # skewed ids: a few frequent, a long tail
            columns[f"c{j}"] = np.floor(vocabulary * rng.random(n) ** 3).astype(np.int64)
        dense = rng.normal(size=(n, NUMERIC))
        columns.update({f"n{j}": dense[:, j] for j in range(NUMERIC)})
        effect = sum(((columns[f"c{j}"] * 2654435761) % 1000) / 1000.0 - 0.5 for j in (0, 5, 12))
        click = rng.random(n) < 1 / (1 + np.exp(-(-3.3 + 0.6 * dense[:, 0] + effect)))
        buy = click & (rng.random(n) < 1 / (1 + np.exp(-(-4.7 + 0.8 * dense[:, 1] + 0.5 * effect))))
        columns["click"], columns["conversion"] = click.astype(np.int64), buy.astype(np.int64)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    writer.close()
    tmp.rename(path)


def overrides(folder: Path, arch: str, batch_size: int, out_of_core: bool, cache: Path) -> list[str]:
    features = "{categorical: [" + ", ".join(f"c{j}" for j in range(FIELDS)) + "], numeric: [" + \
        ", ".join(f"n{j}" for j in range(NUMERIC)) + "]}"
    tower = ["arch.tower_units=[128,64]"] if arch == "esmm" else []
    return ["data=tabular", "data.name=synthetic_impressions", f"data.root={folder}",
            "data.files={train: train.parquet, val: val.parquet, test: test.parquet}", f"data.features={features}",
            f"data.tasks={TASKS}", "data.main_task=ctcvr",
            "data.derived={ctcvr_label: {from: conversion, op: '==', value: 1, where: click}}",
            f"data.loader.batch_size={batch_size}", f"arch={arch}", *tower,
            f"data.out_of_core.enabled={str(out_of_core).lower()}", f"data.out_of_core.cache_dir={cache}"]


class MemoryPeaks:
    """Peak resident memory of this process, split as the kernel counts it: anonymous (what the
    process owns: model, optimizer, batches) and file-backed (pages of the memory map, which the
    kernel maps ahead of each fault and may reclaim at any time). Sampled every 0.2 s."""

    def __init__(self) -> None:
        import threading

        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            status = Path("/proc/self/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            self.anon = max(self.anon, int(fields.get("RssAnon", "0 kB").split()[0]) // 1024)
            self.file = max(self.file, int(fields.get("RssFile", "0 kB").split()[0]) // 1024)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_anon_mib": self.anon, "peak_file_mib": self.file}


def phase(args: argparse.Namespace) -> dict:
    """One measured step of the benchmark, in this process."""
    peaks = MemoryPeaks()
    folder = Path(args.work) / ("large" if args.source != "memory" else "small")
    cache = Path(args.work) / "cache"
    started = time.perf_counter()
    cfg = compose_config(overrides(folder, args.arch or "esmm", args.batch_size, args.source != "memory", cache))
    datamodule = build_datamodule(cfg)
    result = {"phase": args.phase, "source": args.source, "arch": args.arch,
              "rows": len(datamodule.tables["train"]), "prepare_seconds": time.perf_counter() - started}
    if args.phase == "train":
        seconds = mtlrec_epoch_seconds(cfg, datamodule, 1)[0]
        result.update(epoch_seconds=seconds, rows_per_second=result["rows"] / seconds)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(peaks.stop())
    return result


def run_phase(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "mtlrec.bench_outofcore", "--phase", *argv],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase {argv} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="folder for the generated files and the cache")
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--memory-rows", type=int, default=2_000_000)
    parser.add_argument("--eval-rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--archs", default="esmm,mmoe")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", default="cache", help=argparse.SUPPRESS)
    parser.add_argument("--arch", default=None, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.phase:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(phase(args)))
        return
    work = Path(args.work)
    started = time.perf_counter()
    for name, rows in (("large", args.rows), ("small", args.memory_rows)):
        generate(work / name / "train.parquet", rows, seed=0)
        for split, seed in (("val", 1), ("test", 2)):
            generate(work / name / f"{split}.parquet", args.eval_rows, seed=seed)
    print(f"generated {args.rows:,} + {args.memory_rows:,} training rows in {time.perf_counter() - started:.0f} s")
    common = ["--work", args.work, "--batch-size", str(args.batch_size)]
    convert = run_phase("convert", *common, "--source", "cache")
    print(f"conversion of {convert['rows']:,} training rows (+ {2 * args.eval_rows:,} eval): "
          f"{convert['prepare_seconds']:.0f} s, {convert['rows'] / convert['prepare_seconds']:,.0f} rows/s, "
          f"peak RSS {convert['peak_rss_mib']:,.0f} MiB (anonymous {convert['peak_anon_mib']:,}, "
          f"file-backed {convert['peak_file_mib']:,})")
    print(f"\n{'arch':<6}{'source':<22}{'rows':>12}{'epoch s':>9}{'rows/s':>10}{'peak RSS MiB':>14}"
          f"{'anon':>7}{'file':>7}{'× memory':>10}")
    for arch in [a for a in args.archs.split(",") if a]:
        mapped = run_phase("train", *common, "--source", "cache", "--arch", arch)
        memory = run_phase("train", *common, "--source", "memory", "--arch", arch)
        for label, r in (("memory-mapped cache", mapped), ("in-memory table", memory)):
            ratio = memory["rows_per_second"] / r["rows_per_second"]
            print(f"{arch:<6}{label:<22}{r['rows']:>12,}{r['epoch_seconds']:>9.0f}{r['rows_per_second']:>10,.0f}"
                  f"{r['peak_rss_mib']:>14,.0f}{r['peak_anon_mib']:>7,}{r['peak_file_mib']:>7,}{ratio:>10.2f}")
    print(f"\nbatch {args.batch_size}, fused Adam, 1 thread; '× memory' = in-memory rows/s over this row's "
          f"(1.00 = as fast); targets: peak RSS <= 3 GB, mapped within 1.5x of memory. RSS counts the pages of "
          f"the memory map the kernel has mapped in (file, reclaimable); anon is what the process owns")


if __name__ == "__main__":
    main()
