"""Side by side, in one benchmark run: mtlrec's real training path against an independent
hand-written loop (and the peer libraries when the ``bench`` extra provides them).

    python -m mtlrec.bench --root ../shared/data/census-income-kdd                 # 1 and 2 threads, 2 repeats
    python -m mtlrec.bench --root ... --threads 1 --repeats 3

The setting is fixed so that every system trains the same model: MMoE on Census-Income group 1
(income, marital), embeddings of 4, 8 experts × 16 units, towers of 8, batch 1024, Adam 1e-3,
5 epochs. Each system runs as its own process (so its peak RSS is its own, read with
``wait4``), the systems are interleaved within every repeat, and the table gives medians over
repeats: training samples/s (validation excluded; mtlrec's ``TrainThroughput``, the loop's own
clock around its epochs), the ratio of training time to the hand-written loop's, peak RSS
(the whole process: data loading included) and test AUC per task.

* ``mtlrec-train``: ``python -m mtlrec.train`` with those sizes, i.e. Lightning, the index-batch
  loader, the training module, validation and checkpoints every epoch (not timed).
* ``mtlrec-train compile=true``: the same with the training forward through ``torch.compile``
  (:mod:`mtlrec.training.compiled`); its first epoch, which compiles, is not timed.
* ``hand-written loop``: :mod:`mtlrec.bench_handwritten` (stacked weights, one gather per batch,
  no DataLoader, none of mtlrec's model or training code). The ratios are to its time.
* ``hand-written loop, index_add embedding backward``: the same loop with the embedding gradient
  as one ``index_add`` (``--scatter-embedding``), the CPU trick of mtlrec's lookup: mtlrec beside
  a loop that has it too.
* ``--mixed-precision`` adds ``mtlrec-train`` under ``trainer.precision=bf16-mixed``, eager and
  compiled: what bf16 matmuls buy on a CPU that has them (AVX512-BF16, AMX). A deviation from the
  float32 setting that the loops keep, so these rows are not the comparison the others are.
* DeepCTR-Torch and torch-rechub: listed as "not installed" unless importable; no adapter is
  shipped yet (they could not be installed or checked here, without internet).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

SIZES = ["data=census_income", "data.group=1", "arch=mmoe", "encoder.embedding_dim=4", "arch.num_experts=8",
         "arch.expert_units=[16]", "arch.tower_units=[8]", "data.loader.batch_size=1024", "optimizer=adam",
         "optimizer.lr=0.001", "callbacks.early_stopping.patience=5"]
PEERS = {"DeepCTR-Torch": "deepctr_torch", "torch-rechub": "torch_rechub"}


def _run(cmd: Sequence[str], threads: int) -> tuple[str, float]:
    """(stdout, peak RSS in MiB) of one child process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])}… failed ({proc.returncode}): {err.read()[-2000:]}")
        return out.read(), usage.ru_maxrss / 1024


def mtlrec_train(root: str, threads: int, epochs: int, extra: Sequence[str] = ()) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        _, rss = _run([sys.executable, "-m", "mtlrec.train", *SIZES, *extra, f"trainer.max_epochs={epochs}",
                       f"data.root={root}", f"torch_threads={threads}",
                       f"hydra.run.dir={folder}", "console.progress_bar=false", "logger=none"], threads)
        record = json.loads((Path(folder) / "results.json").read_text())
    timing = record["timing"]
    return {"samples_per_second": timing["train_samples_per_second"], "train_seconds": timing["train_seconds"],
            "peak_rss_mib": rss, "test_auc": {t: m["auc"] for t, m in record["metrics"]["test"].items()}}


def handwritten(root: str, threads: int, epochs: int, extra: Sequence[str] = ()) -> dict:
    out, rss = _run([sys.executable, "-m", "mtlrec.bench_handwritten", "--root", root, "--threads", str(threads),
                     "--epochs", str(epochs), *extra], threads)
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "peak_rss_mib": rss}


SYSTEMS = {"hand-written loop": handwritten,
           "hand-written loop, index_add embedding backward": partial(handwritten, extra=["--scatter-embedding"]),
           "mtlrec-train": mtlrec_train, "mtlrec-train compile=true": partial(mtlrec_train, extra=["compile=true"]),
           "mtlrec-train bf16-mixed": partial(mtlrec_train, extra=["trainer.precision=bf16-mixed"]),
           "mtlrec-train compile=true bf16-mixed": partial(mtlrec_train,
                                                           extra=["compile=true", "trainer.precision=bf16-mixed"])}
MIXED_PRECISION = ("mtlrec-train bf16-mixed", "mtlrec-train compile=true bf16-mixed")  # only with --mixed-precision


def compare(root: str, threads: Sequence[int], repeats: int, epochs: int = 5,
            systems: Sequence[str] = tuple(SYSTEMS)) -> dict:
    samples: dict[tuple[int, str], list[dict]] = {}
    for _ in range(repeats):
        for n in threads:
            for name, fn in ((k, SYSTEMS[k]) for k in systems):
                samples.setdefault((n, name), []).append(fn(root, n, epochs))
    return samples


def table(samples: dict, repeats: int, epochs: int = 5) -> str:
    lines = ["| threads | system | samples/s | time × hand-written loop | peak RSS MiB | test AUC income / marital "
             "| × loop, range over repeats |", "|--:|:--|--:|--:|--:|:--|:--|"]
    for n in sorted({k[0] for k in samples}):
        # time per training sample (validation excluded on every side), as a ratio to the loop's
        speeds = {name: statistics.median(r["samples_per_second"] for r in runs) for (t, name), runs in samples.items()
                  if t == n}
        for (t, name), runs in samples.items():
            if t != n:
                continue
            speed = speeds[name]
            rss = statistics.median(r["peak_rss_mib"] for r in runs)
            auc = {task: statistics.median(r["test_auc"][task] for r in runs) for task in runs[0]["test_auc"]}
            ratio = speeds["hand-written loop"] / speed
            income, marital = (auc.get(t, float("nan")) for t in ("income", "marital"))
            # each repeat's ratio to the loop of the same repeat: how far the machine's noise moves it
            loop = samples[(n, "hand-written loop")]
            pairs = [a["samples_per_second"] / b["samples_per_second"] for a, b in zip(loop, runs)]
            spread = f"{min(pairs):.2f}–{max(pairs):.2f}"
            lines.append(f"| {n} | {name} | {speed:,.0f} | {ratio:.2f} | {rss:,.0f} | {income:.4f} / {marital:.4f} "
                         f"| {spread} |")
    for peer, module in PEERS.items():
        state = "installed, but no adapter is shipped yet" if importlib.util.find_spec(module) else "not installed"
        lines.append(f"| – | {peer} | {state} | | | | |")
    return "\n".join(lines) + (f"\n\nMedians over {repeats} interleaved repeat(s); {epochs} epochs each, all timed "
                               "but the compiled runs' first (their compilation), left out of their samples/s and "
                               "ratio.")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the census-income-kdd folder")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated systems to leave out")
    parser.add_argument("--epochs", type=int, default=5, help="the setting's 5; fewer only to check that it runs")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="also mtlrec-train under trainer.precision=bf16-mixed, eager and compiled")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = sorted(skip - set(SYSTEMS))
    if unknown:
        parser.error(f"--skip: unknown system(s) {unknown}; the systems are {', '.join(SYSTEMS)}")
    systems = [name for name in SYSTEMS if name not in skip and (args.mixed_precision or name not in MIXED_PRECISION)]
    samples = compare(args.root, [int(t) for t in args.threads.split(",")], args.repeats, args.epochs, systems)
    print(table(samples, args.repeats, args.epochs))
    print(f"\n({time.perf_counter() - started:.0f} s; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
