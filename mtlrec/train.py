"""``mtlrec-train``: compose a run with Hydra, train it with Lightning, write ``results.json``.

Every piece (data, architecture, weighting, optimizer, trainer, callbacks, logger) is built with
``hydra.utils.instantiate`` from its config group; nothing here branches on what was chosen.
Model selection and early stopping watch the main task's *validation* metric; test metrics are
computed once, from the best checkpoint.

A run whose folder already holds a complete ``results.json`` for the same resolved config is
skipped (so re-running a sweep only redoes missing or failed runs), and a run interrupted
mid-training resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import mtlrec
from mtlrec.build import _instantiate, build_datamodule, build_module
from mtlrec.data.messages import one_line
from mtlrec.data.schema import SchemaError
from mtlrec.extras import install_hint, missing_logger_extra
from mtlrec.options import OptionError, check_command_line, check_config
from mtlrec.training.console import header, progress_bar_wanted, quiet_third_party
from mtlrec.training.guard import NonFiniteError
from mtlrec.training.module import MultiTaskModule
from mtlrec.training.results import (
    FORMAT_VERSION,
    RESULTS_FILE,
    config_hash,
    git_commit,
    is_complete,
    read_results,
    write_json_atomic,
)
from mtlrec.training.selection import TaskwiseSelection
from mtlrec.training.stopping import StayStopped
from mtlrec.training.timing import TrainThroughput
from mtlrec.transfer.backbone_file import save_trained_backbone
from mtlrec.transfer.init_from import initialise_from, recorded
from mtlrec.transfer.init_from import summary as transfer_summary
from mtlrec.transfer.l2sp import L2SP

log = logging.getLogger("mtlrec.train")
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
HASH_FILE = ".config_hash"


def build_callbacks(cfg: DictConfig, module: MultiTaskModule, checkpoint_dir: str | Path) -> list[L.Callback]:
    """The config's callbacks, with ``monitor: auto`` resolved to the main task's validation metric.

    When the tasks share no parameter (independent networks), selection is per task: a
    :class:`TaskwiseSelection` checkpoints each network at its own best validation epoch and takes
    over the early stopping of the ``monitor: auto`` ``EarlyStopping`` (its patience and min_delta).
    """
    monitor, mode = module.selection
    taskwise = module.taskwise_selection()
    callbacks: list[L.Callback] = [TrainThroughput(warmup_epochs=int(module.compile_model)), StayStopped()]
    early_stopping = None
    for node in (cfg.get("callbacks") or {}).values():
        if node is None:
            continue
        extra = {}
        if node.get("monitor") == "auto":
            extra["monitor"] = monitor
        if node.get("mode") == "auto":
            extra["mode"] = mode
        callback = instantiate(node, **extra)
        if taskwise and node.get("monitor") == "auto" and isinstance(callback, EarlyStopping):
            early_stopping = callback  # applied per task below
            continue
        callbacks.append(callback)
    if taskwise:
        monitors, state_keys = taskwise
        callbacks.append(TaskwiseSelection.replacing(early_stopping, monitors=monitors, state_keys=state_keys,
                                                     dirpath=checkpoint_dir))
    return callbacks


def build_logger(cfg: DictConfig) -> L.pytorch.loggers.Logger | bool:
    """The ``logger`` group's Lightning logger (``False`` for ``logger=none``). A logger whose
    package is an optional extra that is not installed fails here, before anything is written."""
    node = cfg.get("logger")
    if not node or "_target_" not in node:
        return False
    extra = missing_logger_extra(str(node._target_))
    if extra:
        raise ModuleNotFoundError(
            f"logger={extra} needs the {extra!r} package, which is not installed: {install_hint(extra)}; "
            f"or choose logger=csv (built in) or logger=none"
        )
    return instantiate(node)


def set_threads(setting: int | str | None) -> None:
    """``torch_threads``: a number; ``auto``: the cores this process may use, shared evenly among the
    jobs a joblib launcher runs at once (its ``n_jobs``; all cores when -1), so parallel jobs never
    oversubscribe the cores; ``null``: torch's default."""
    if setting in (None, "", 0):
        return
    if setting == "auto":
        torch.set_num_threads(auto_threads())
        return
    try:
        torch.set_num_threads(int(setting))
    except (TypeError, ValueError):
        raise BadInputError(f"torch_threads={setting!r}: give a number of threads, auto or null") from None


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def drop_nvml_check_without_gpu() -> None:
    """Lightning's import sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (asking whether CUDA is there
    then reads NVML instead of initialising CUDA, which would break a later fork), and torch's Adam
    asks on every step (``Optimizer._accelerator_graph_capture_health_check``). Without a GPU that
    is a failed ``dlopen`` of libnvidia-ml each step: 78 µs against 1.3 µs for torch's cached count,
    a host cost a hand-written loop (no Lightning) never pays. With no GPU there is no CUDA to
    protect from a fork, so the check goes back to torch's own; with a GPU nothing changes."""
    if os.environ.get(NVML_CHECK) == "1" and not torch.cuda.is_available():
        del os.environ[NVML_CHECK]


def auto_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = 1
    if _is_multirun():
        launcher = HydraConfig.get().launcher
        if "joblib" in str(launcher.get("_target_", "")).lower():
            n_jobs = launcher.get("n_jobs")
            n_jobs = -1 if n_jobs is None else int(n_jobs)  # joblib: -1 all cores, -2 all but one, ...
            jobs = max(1, min(cores + 1 + n_jobs if n_jobs < 0 else n_jobs, cores))
    return max(1, cores // jobs)


def _sweeper_records_failures() -> bool:
    """Optuna's sweeper turns a job that raises into a failed trial (and a returned NaN into a
    crash of the whole study, with optuna 2.10); the basic sweeper stops at a job that raises."""
    sweeper = HydraConfig.get().sweeper.get("_target_", "") if HydraConfig.initialized() else ""
    return "optuna" in str(sweeper)


def _is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def selected_checkpoint(trainer: L.Trainer, monitor: str, tasks: list[str]) -> tuple[str, dict[str, int | None]]:
    """(the checkpoint that validation, test and scoring use, task -> the 1-based epoch its weights
    come from). Per-task best when selection is per task; else the best on the main task's
    validation metric ``monitor``; ``""`` when no callback keeps one (then the final weights are
    evaluated and the record names no checkpoint)."""
    per_task = next((c for c in trainer.callbacks if isinstance(c, TaskwiseSelection)), None)
    if per_task is not None:
        return per_task.best_model_path, {t: per_task.best_epoch[t] for t in tasks}
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == monitor), "")
    epoch = _checkpoint_epoch(best)
    return best, {t: epoch for t in tasks}


def run(cfg: DictConfig, output_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any] | list:
    """Train and evaluate one configuration; returns the results record (also written to disk), or
    with ``seeds=K`` the K seeds' records (:mod:`mtlrec.train_stacked`)."""
    output_dir = Path(output_dir)
    if cfg.get("seeds", 1) != 1:  # K seeds as one stacked model, each recorded as its own run
        from mtlrec.train_stacked import run_stacked

        return run_stacked(cfg, output_dir, overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    digest = config_hash(resolved)
    if is_complete(output_dir, digest):
        log.info("skipping: %s already holds complete results for this config", output_dir / RESULTS_FILE)
        return read_results(output_dir)

    set_threads(cfg.get("torch_threads"))
    drop_nvml_check_without_gpu()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:  # bad data or config values fail here, before anything is written
        check_config(cfg)
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule)
        transferred = initialise_from(module, datamodule.preprocessor, cfg.init_from) if cfg.get("init_from") else None
        l2sp = (cfg.get("finetune") or {}).get("l2sp")
        if l2sp:
            if transferred is None:
                raise ValueError("finetune.l2sp pulls toward the source weights: it needs init_from=<source run>")
            unknown = sorted(set(l2sp) - {"alpha", "beta"})
            if unknown:
                raise ValueError(f"finetune.l2sp: unknown option(s) {unknown}; the options are alpha, beta")
            module.l2sp = L2SP(module.architecture, transferred, **l2sp)
        monitor, mode = module.selection
        callbacks = build_callbacks(cfg, module, output_dir / "checkpoints")
        logger = build_logger(cfg)
    except BAD_INPUT as err:
        raise BadInputError(one_line(err) or type(err).__name__) from err
    per_task = any(isinstance(c, TaskwiseSelection) for c in callbacks)
    num_parameters = sum(p.numel() for p in module.architecture.parameters())
    console = cfg.get("console") or {}
    try:
        progress = progress_bar_wanted(console.get("progress_bar", False), _is_multirun())
        if progress:
            callbacks.append(TQDMProgressBar(refresh_rate=int(console.get("refresh_rate", 20))))
        # build's _instantiate: the Trainer's own error (an accelerator this machine lacks) comes out unwrapped
        # the index-batch sampler shards itself across processes (mtlrec.data.table.IndexBatchSampler):
        # Lightning's DistributedSampler would pad and reorder the rows instead
        trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=callbacks, logger=logger, enable_progress_bar=progress,
                                          use_distributed_sampler=False)
        module.check_trainer(str(trainer.precision), trainer.world_size)
    except BAD_INPUT as err:
        message = one_line(err) or type(err).__name__
        raise BadInputError(message if message.startswith(("trainer", "console")) else f"trainer: {message}") from err
    if cfg.get("print_results", True) and trainer.is_global_zero:
        if transferred:
            print(transfer_summary(transferred), flush=True)
        print(run_header(cfg, datamodule, monitor, per_task, num_parameters, trainer, output_dir), flush=True)

    output_dir.mkdir(parents=True, exist_ok=True)
    resume = _resumable_checkpoint(output_dir, digest)
    writer = trainer.is_global_zero  # with several processes, one writes (and clears) the run's files
    if resume is None and writer:  # another config's (or a finished run's) checkpoints must never be picked up
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    if writer:
        (output_dir / HASH_FILE).write_text(digest)
        datamodule.save_preprocessing(output_dir)
    record = _started_record(resolved, digest, overrides, datamodule, (monitor, mode, per_task), num_parameters,
                             transferred)
    try:
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        train_seconds = time.perf_counter() - started
        final_weights = module.weighting.weights()  # before validate() reloads the best checkpoint
        # read before validate()/test() reload the checkpoint (and with it the callbacks' state)
        best, epochs = selected_checkpoint(trainer, monitor, datamodule.schema.task_names)
        ckpt = best or None
        val = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
        test = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
        # the best checkpoint is loaded now: its backbone, for backbone.weights_path of a target run
        backbone_file = (save_trained_backbone(module.architecture, datamodule.schema.main_task, output_dir)
                         if writer else None)
    except Exception as err:  # a crash mid-training is recorded, then re-raised
        record.update(status="failed", error=f"{type(err).__name__}: {err}", failure=getattr(err, "details", None))
        if writer:
            write_json_atomic(output_dir / RESULTS_FILE, record)
        raise
    throughput = next(c for c in callbacks if isinstance(c, TrainThroughput))
    record.update(_finished_fields(
        module, output_dir, best, epochs, trainer.current_epoch, val, test,
        timing={"train_seconds": round(train_seconds, 3),
                "train_samples_per_second": round(throughput.samples_per_second, 1)},
        weights={"final": final_weights, "per_epoch": module.weight_history}, losses=module.loss_history,
        backbone_file=backbone_file,
    ))
    if writer:
        write_json_atomic(output_dir / RESULTS_FILE, record)
    return record


def run_header(cfg: DictConfig, datamodule, monitor: str, per_task: bool, num_parameters: int, trainer: L.Trainer,
               output_dir: Path) -> str:
    """What is about to be trained, on what, and where it goes (:func:`mtlrec.training.console.header`)."""
    return header(
        arch=cfg.arch._target_.rsplit(".", 1)[-1], weighting=cfg.weighting._target_.rsplit(".", 1)[-1],
        dataset=datamodule.raw.name, rows={s: len(t) for s, t in datamodule.tables.items()},
        tasks=datamodule.schema.task_names, main_task=datamodule.schema.main_task, monitor=monitor,
        per_task=per_task, parameters=num_parameters,
        max_epochs=trainer.max_epochs, device=str(trainer.strategy.root_device), output_dir=str(output_dir),
    )


def _started_record(resolved: dict, digest: str, overrides: list[str] | None, datamodule,
                    selection: tuple[str, str, bool], num_parameters: int, transferred) -> dict[str, Any]:
    """What a record says before training: the config, the data, how the model is selected."""
    monitor, mode, per_task = selection
    return {
        "format": FORMAT_VERSION,
        "config": resolved,
        "config_hash": digest,
        "overrides": list(overrides or []),
        "seed": resolved["seed"],
        "dataset": datamodule.raw.name,
        "main_task": datamodule.schema.main_task,
        "selection": {"monitor": monitor, "mode": mode, "per_task": per_task},
        "git_commit": git_commit(),
        "versions": _versions(),
        "num_parameters": num_parameters,
        "init_from": recorded(transferred) if transferred else None,
    }


def _finished_fields(module: MultiTaskModule, output_dir: Path, best: str, epochs: dict[str, int | None],
                     epochs_trained: int, val: dict, test: dict, timing: dict, weights: dict, losses: list,
                     backbone_file: Path | None) -> dict[str, Any]:
    """What a complete record adds after training: the selected epochs, metrics and histories."""
    main_task = module.schema.main_task
    inside = best and Path(best).is_relative_to(output_dir)
    return dict(
        status="complete",
        error=None,
        best_epoch=epochs[main_task],
        best_epochs=epochs,
        checkpoint=str(Path(best).relative_to(output_dir)) if inside else (best or None),
        epochs_trained=epochs_trained,
        metrics={"val": _nest(val, "val"), "test": _nest(test, "test")},
        timing=timing,
        weights=weights,
        # gate utilisation on validation, per epoch (mixture-of-experts architectures; mtlrec.insight.gates)
        gates={"per_epoch": module.gate_history, "experts_of": module.architecture.gate_expert_labels()}
        if module.gate_history else None,
        # task-gradient conflict on the shared parameters, sampled every insight.conflict_every steps
        conflict=module.conflict.summary(),
        train_loss_per_epoch=losses,
        backbone_file=backbone_file.name if backbone_file else None,
    )


def _resumable_checkpoint(output_dir: Path, digest: str) -> str | None:
    last = output_dir / "checkpoints" / "last.ckpt"
    previous = output_dir / HASH_FILE
    if last.exists() and previous.exists() and previous.read_text().strip() == digest:
        log.info("resuming interrupted training from %s", last)
        return str(last)
    return None


def _checkpoint_epoch(path: str) -> int | None:
    """Epochs trained when the best checkpoint was saved (1-based; Lightning stores the index)."""
    if not path:
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def _nest(flat: dict[str, float], split: str) -> dict[str, dict[str, float]]:
    """{"val/income/auc": x} -> {"income": {"auc": x}}."""
    nested: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        prefix, task, metric = key.split("/", 2)
        if prefix == split:
            nested.setdefault(task, {})[metric] = float(value)
    return nested


def _versions() -> dict[str, str]:
    import hydra as _hydra
    import torchmetrics

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "hydra": _hydra.__version__,
        "torchmetrics": torchmetrics.__version__,
        "mtlrec": mtlrec.__version__,
    }


def format_metrics(record: dict[str, Any]) -> str:
    """A small per-task table of validation and test metrics."""
    rows = [f"{'task':<14}{'metric':<10}{'val':>10}{'test':>10}"]
    for task, metrics in record["metrics"]["test"].items():
        for name, value in metrics.items():
            val = record["metrics"]["val"].get(task, {}).get(name, float("nan"))
            rows.append(f"{task:<14}{name:<10}{val:>10.4f}{value:>10.4f}")
    return "\n".join(rows)


def selection_value(record: dict[str, Any]) -> float:
    """The main task's validation selection metric as a score to *maximise* (what a sweeper
    optimises): AUC/accuracy as they are, MSE negated, so one Optuna direction fits every task kind."""
    task = record["main_task"]
    metric = record["selection"]["monitor"].split("/", 2)[2]
    value = float(record["metrics"]["val"][task][metric])
    return -value if record["selection"]["mode"] == "min" else value


# What bad input raises while a run is built: a wrong file, column, label or option value. Only
# errors raised before training starts count; an error during training is a bug and keeps its traceback.
# Lightning's MisconfigurationException: a trainer option this machine cannot honour (trainer.accelerator=gpu here).
BAD_INPUT = (SchemaError, ValueError, FileNotFoundError, ModuleNotFoundError, MisconfigurationException)


class BadInputError(ValueError):
    """The data or the config cannot be trained on; the message (one line) names the file, column
    or option and the fix."""


def _record_bad_input(cfg: DictConfig, output_dir: str | Path, overrides: list[str], err: Exception) -> None:
    """A sweep's job that stopped on bad input leaves a ``failed`` record, so the report lists it
    (and a re-run of the sweep redoes it) instead of the job silently missing."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_json_atomic(Path(output_dir) / RESULTS_FILE, {
        "format": FORMAT_VERSION, "config": resolved, "config_hash": config_hash(resolved), "overrides": overrides,
        "seed": cfg.get("seed"), "status": "failed", "error": f"{type(err).__name__}: {err}", "failure": None,
    })


def _fail_with_one_line(err: Exception) -> None:
    """One line on stderr and exit status 2 (bad input) or 1 (a run that failed while training);
    HYDRA_FULL_ERROR=1 shows the traceback instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    failed = isinstance(err, NonFiniteError)
    print(f"mtlrec-train: {'run failed' if failed else 'error'}: {err}", file=sys.stderr, flush=True)
    raise SystemExit(1 if failed else 2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    if (cfg.get("console") or {}).get("quiet_third_party", True):
        quiet_third_party()
    try:
        record = run(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    except (BadInputError, NonFiniteError) as err:
        if _is_multirun() and os.environ.get("HYDRA_FULL_ERROR") != "1":
            log.error("run failed: %s", err)
            if isinstance(err, BadInputError):  # failed before any record existed: say so in one
                _record_bad_input(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), err)
            if _sweeper_records_failures():
                raise  # Optuna's sweeper marks the trial FAIL and goes on (hydra.sweeper.max_failure_rate)
            # Hydra's basic sweeper stops the whole sweep at a job that raises; this job's record
            # says it failed, and the sweep goes on
            return float("nan")
        _fail_with_one_line(err)
    records = record if isinstance(record, list) else [record]
    if cfg.get("print_results", True) and rank_zero_only.rank == 0:  # one process of a data-parallel run
        for one in records:
            epochs = one.get("best_epochs") or {}
            chosen = (", ".join(f"{t} {e}" for t, e in epochs.items()) if one["selection"].get("per_task")
                      else str(one["best_epoch"]))
            seed = f", seed {one['seed']}" if isinstance(record, list) else ""  # which of the stacked seeds
            print(f"\n{cfg.arch._target_.rsplit('.', 1)[-1]} on {one.get('dataset', '?')}, weighting "
                  f"{cfg.weighting._target_.rsplit('.', 1)[-1]}{seed} (best epoch {chosen} of "
                  f"{one.get('epochs_trained')}, {one['timing']['train_seconds']:.1f}s training):")
            print(format_metrics(one))
        folder = Path(hydra_cfg.runtime.output_dir)
        print(f"results: {folder / RESULTS_FILE}" if len(records) == 1 and not isinstance(record, list)
              else f"results: {folder}/seed=*/{RESULTS_FILE}")
    # a sweeper optimises the mean over the stacked seeds
    return sum(selection_value(one) for one in records) / len(records)


def cli() -> None:
    """``mtlrec-train``: the command line is composed once first, so a typo'd key or an unknown
    option stops in one line that says what was meant (:func:`mtlrec.options.check_command_line`)."""
    try:
        check_command_line(sys.argv[1:], CONFIG_DIR)
    except OptionError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"mtlrec-train: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    main()


if __name__ == "__main__":
    cli()
