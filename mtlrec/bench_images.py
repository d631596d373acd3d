"""Benchmark of the frozen-backbone path: a cold run (the one-time feature extraction) against the
same run again with the cache warm, side by side in one invocation.

    python -m mtlrec.bench_images --root path/to/GroceryStoreDataset            # 224 px, as mtlrec-train's default
    python -m mtlrec.bench_images --root ... --input-size 112 --epochs 3

Prints: extraction images/s; wall time and peak RSS of ``mtlrec-train data=grocery backbone=vgg16``
with an empty cache and again with it warm (their ratio is what a sweep's later runs gain); and
per-epoch training time on the cached features against the first epoch of a cold run (extraction
plus one epoch). Each run is a real ``mtlrec-train`` process, so the figures include everything a
user waits for. Run it on a quiet machine: a ratio measured beside other jobs is not a figure.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from mtlrec.bench_weightings import EpochTimes, compose_config
from mtlrec.build import build_datamodule, build_module

EXTRACTED = re.compile(r"image features: (\d+) images, extracted (\d+) at ([\d.]+) img/s")


PEAK = re.compile(r"peak_rss_kib=(\d+)")
# mtlrec-train in a process that reports its own peak RSS when it exits (Hydra ends with sys.exit)
WRAPPER = ("import resource, runpy, sys\n"
           "sys.argv = ['mtlrec-train', *sys.argv[1:]]\n"
           "try:\n    runpy.run_module('mtlrec.train', run_name='__main__')\n"
           "finally:\n"
           "    print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n")


def timed_run(overrides: Sequence[str], cache: Path, run_dir: Path) -> dict:
    """One ``mtlrec-train`` process: wall seconds, peak RSS (MiB) and what it said of the features."""
    env = {**os.environ, "MTLREC_CACHE_DIR": str(cache)}
    command = [sys.executable, "-c", WRAPPER, *overrides, f"hydra.run.dir={run_dir}", "console.progress_bar=false"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mtlrec-train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found, peak = EXTRACTED.search(done.stderr), PEAK.search(done.stderr)
    return {"seconds": seconds, "extracted": int(found.group(2)) if found else 0,
            "images_per_second": float(found.group(3)) if found else None,
            "peak_rss_mib": int(peak.group(1)) / 1024 if peak else float("nan")}


def cached_epoch_seconds(overrides: Sequence[str], cache: Path, epochs: int) -> list[float]:
    """Per-epoch seconds of the real Trainer on cached features (validation off)."""
    os.environ["MTLREC_CACHE_DIR"] = str(cache)
    cfg = compose_config(list(overrides))
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    timer = EpochTimes()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    return timer.epoch_seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the Grocery Store checkout (data.root)")
    parser.add_argument("--arch", default="mmoe")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each full run and of the epoch timing")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (torch_threads)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = ["data=grocery", f"data.root={Path(args.root).absolute()}", "backbone=vgg16", f"arch={args.arch}",
                 f"backbone.input_size={args.input_size}", f"trainer.max_epochs={args.epochs}",
                 f"torch_threads={args.threads}", *args.overrides]
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        runs = {}
        for name in ("cold cache", "warm cache"):
            runs[name] = timed_run(overrides, cache, Path(scratch) / name.replace(" ", "_"))
        epochs = cached_epoch_seconds(overrides, cache, args.epochs)

    cold, warm = runs["cold cache"], runs["warm cache"]
    if not cold["extracted"]:
        raise SystemExit("the cold run found every feature cached (is encoder.kinds.image.cache_dir a warm cache?)")
    extraction = cold["extracted"] / cold["images_per_second"]
    later = statistics.median(epochs[1:] or epochs)
    print(f"{args.arch} on grocery, vgg16 frozen at {args.input_size} px, {args.threads} threads, "
          f"{args.epochs} epochs per run")
    print(f"feature extraction: {cold['extracted']} images at {cold['images_per_second']:.1f} img/s "
          f"({extraction:.0f} s, once)")
    print(f"{'run':<12}{'wall s':>10}{'× warm':>9}{'peak RSS MiB':>15}")
    for name, run in runs.items():
        print(f"{name:<12}{run['seconds']:>10.1f}{run['seconds'] / warm['seconds']:>9.2f}{run['peak_rss_mib']:>15.0f}")
    print(f"epoch on cached features: median {later:.2f} s (epochs: {', '.join(f'{s:.2f}' for s in epochs)}); "
          f"first epoch of a cold run (extraction + epoch): {extraction + epochs[0]:.1f} s = "
          f"{(extraction + epochs[0]) / later:.0f}× a cached epoch")


if __name__ == "__main__":
    main()
