"""Benchmark of the weightings: each one's step through mtlrec's Trainer path, beside a bare loop
over the same modules, side by side in one run (GradNorm × fixed, …). The comparison with an
independent hand-written loop is :mod:`mtlrec.bench`.

    python -m mtlrec.bench_weightings --root ../shared/data/census-income-kdd --epochs 3 --weightings fixed,gradnorm
    python -m mtlrec.bench_weightings --data womens_reviews --root ../shared/data/womens-ecommerce-reviews

Both sides train the *same* architecture (built from the same Hydra config) on the *same*
column tensors with the same batch size and Adam; the bare loop is the fastest plain loop we know
(permute, index, forward, sum of losses, backward, step). With ``gradnorm`` among the weightings,
the bare loop also runs with the least GradNorm must add (one more gradient on the last shared
layer per task but one), whose ratio to the bare loop is GradNorm's measured floor. Validation is
off on both sides, so the figures compare training steps only. Variants are interleaved and
repeated; medians are reported, and ratios are taken against the bare loop and against fixed
weighting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mtlrec.build import build_datamodule, build_module
from mtlrec.data.datamodule import TabularDataModule
from mtlrec.train import CONFIG_DIR
from mtlrec.training.timing import TrainThroughput

FLOOR = "bare loop + GradNorm's floor"


def bare_loop_epoch_seconds(cfg: DictConfig, datamodule: TabularDataModule, epochs: int,
                            gradnorm_floor: bool = False) -> list[float]:
    """Per-epoch seconds of a plain PyTorch loop over the same model and tensors.

    ``gradnorm_floor``: the loop plus the least GradNorm must add to it, the gradient on the last
    shared layer of every task but one (the model's backward gives the last), each from its own
    ``autograd.grad``. Its ratio to the plain loop is the floor of GradNorm's ratio to fixed
    weighting."""
    torch.manual_seed(cfg.seed)
    module = build_module(cfg, datamodule)  # the same architecture and objectives
    model, objectives = module.architecture, module.objectives
    last = [p for p in model.last_shared_parameters() if p.requires_grad] if gradnorm_floor else []
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    table, batch_size = datamodule.tables["train"], datamodule.batch_size
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(table), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(table), batch_size):
            batch = table[order[i : i + batch_size]]
            logits = model(batch).logits
            losses = [obj.loss(logits[t], batch.labels[t]) for t, obj in objectives.items()]
            for loss in losses[1:] if last else []:
                torch.autograd.grad(loss, last, retain_graph=True)
            optimizer.zero_grad(set_to_none=True)
            sum(losses).backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def mtlrec_epoch_seconds(cfg: DictConfig, datamodule: TabularDataModule, epochs: int) -> list[float]:
    """Per-epoch seconds of mtlrec's real Trainer path (validation and checkpoints off)."""
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, datamodule)
    timer = EpochTimes()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.epoch_seconds


class EpochTimes(TrainThroughput):
    """TrainThroughput that also keeps each epoch's duration."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []

    def _stop(self) -> None:
        before = self.seconds
        super()._stop()
        if self.seconds > before:
            self.epoch_seconds.append(self.seconds - before)


def compose_config(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the dataset's folder (data.root), e.g. census-income-kdd")
    parser.add_argument("--data", default="census_income", help="data config: census_income, womens_reviews, …")
    parser.add_argument("--arch", default="mmoe")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions of every variant")
    parser.add_argument("--weightings", default="fixed,gradnorm", help="comma-separated weighting configs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data.loader.batch_size=2048")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = [f"data={args.data}", f"data.root={args.root}", f"arch={args.arch}", *args.overrides]
    cfg = compose_config(base)
    datamodule = build_datamodule(cfg)
    rows = len(datamodule.tables["train"])
    weightings = [w for w in args.weightings.split(",") if w]
    variants = {"bare PyTorch loop": lambda: bare_loop_epoch_seconds(cfg, datamodule, args.epochs)}
    if "gradnorm" in weightings:
        variants[FLOOR] = lambda: bare_loop_epoch_seconds(cfg, datamodule, args.epochs, gradnorm_floor=True)
    for name in weightings:
        wcfg = compose_config([*base, f"weighting={name}"])
        variants[f"mtlrec weighting={name}"] = lambda wcfg=wcfg: mtlrec_epoch_seconds(wcfg, datamodule, args.epochs)

    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            epochs = fn()
            samples[name].extend(epochs[1:] if len(epochs) > 1 else epochs)  # drop the warm-up epoch

    median = {k: statistics.median(v) for k, v in samples.items()}
    bare = median["bare PyTorch loop"]
    fixed = median.get("mtlrec weighting=fixed")
    print(f"\n{args.arch} on {datamodule.raw.name}: {rows:,} training rows, batch {datamodule.batch_size}, "
          f"{args.epochs} epochs × {args.repeats} repeats, {args.threads} thread(s); median over epochs 2..n")
    print(f"{'variant':<32}{'epoch s':>9}{'samples/s':>12}{'× bare':>8}{'× fixed':>9}")
    for name, sec in median.items():
        vs_fixed = f"{sec / fixed:>9.2f}" if fixed else f"{'':>9}"
        print(f"{name:<32}{sec:>9.2f}{rows / sec:>12,.0f}{sec / bare:>8.2f}{vs_fixed}")
    if FLOOR in median and fixed and "mtlrec weighting=gradnorm" in median:
        floor, gradnorm = median[FLOOR] / bare, median["mtlrec weighting=gradnorm"] / fixed
        print(f"GradNorm's floor (the bare loop + T - 1 gradients on the last shared layer): {floor:.2f}x the bare "
              f"loop; GradNorm {gradnorm:.2f}x fixed, {gradnorm / floor:.2f}x its floor")


if __name__ == "__main__":
    main()
