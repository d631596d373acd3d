"""``mtlrec-train seeds=K``: seeds ``seed … seed+K-1`` of one configuration trained as one stacked
model (:mod:`mtlrec.training.stacked`), each seed then validated, tested and recorded on its own.

Every seed gets the folder ``<run dir>/seed=<s>/`` with what a run of its own writes there — its
``results.json`` (its config is that run's config, ``seed=<s>``, so its hash is that run's hash),
schema, preprocessing and best checkpoint — so ``mtlrec-report`` and ``RunScorer`` read it as
they read any run. The record adds ``stacked`` (the stack's seeds and this seed's place in it).

Seeds whose folder already holds complete results for their config are not trained again; the
stack is made of the others. An interrupted stack resumes from ``<run dir>/stack/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from mtlrec.build import _instantiate, build_datamodule, build_module
from mtlrec.data.messages import one_line
from mtlrec.options import check_config
from mtlrec.training.console import progress_bar_wanted
from mtlrec.training.results import RESULTS_FILE, STACK_DIR, config_hash, is_complete, read_results, write_json_atomic
from mtlrec.training.selection import CHECKPOINT_NAME
from mtlrec.training.stacked import SeedwiseSelection, StackedSeedsModule, stacking_refusal
from mtlrec.training.timing import TrainThroughput
from mtlrec.transfer.init_from import initialise_from

log = logging.getLogger("mtlrec.train")


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of seed ``seed``'s own run: ``seed=<seed>``, ``seeds=1``."""
    single = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    single.seed, single.seeds = seed, 1
    return single


def seed_dir(output_dir: Path, seed: int) -> Path:
    return Path(output_dir) / f"seed={seed}"


def run_stacked(cfg: DictConfig, output_dir: str | Path, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Train the config's ``seeds`` seeds as one stacked model; returns their records, in seed order."""
    from mtlrec.train import (  # the single-run path's pieces (this module is imported from it)
        BAD_INPUT,
        HASH_FILE,
        BadInputError,
        _finished_fields,
        _is_multirun,
        _started_record,
        build_logger,
        drop_nvml_check_without_gpu,
        run_header,
        set_threads,
    )

    output_dir = Path(output_dir)
    count = cfg.seeds
    if not isinstance(count, int) or count < 1:
        raise BadInputError(f"seeds={count!r}: give a whole number of seeds (1 trains one run)")
    seeds = list(range(int(cfg.seed), int(cfg.seed) + count))
    configs = {s: seed_config(cfg, s) for s in seeds}
    resolved = {s: OmegaConf.to_container(c, resolve=True) for s, c in configs.items()}
    digests = {s: config_hash(r) for s, r in resolved.items()}
    todo = [s for s in seeds if not is_complete(seed_dir(output_dir, s), digests[s])]
    if not todo:
        log.info("skipping: every seed in %s already holds complete results for this config", output_dir)
        return [read_results(seed_dir(output_dir, s)) for s in seeds]
    set_threads(cfg.get("torch_threads"))
    drop_nvml_check_without_gpu()
    try:
        check_config(cfg)
        differing = [s for s in todo if resolved[s]["data"] != resolved[todo[0]]["data"]]
        if differing:
            raise ValueError(f"seeds={count}: the data config follows the run seed (e.g. data.seed=${{seed}}), so the "
                             f"seeds would train on different data; fix the data's own seed, or run the seeds as "
                             f"separate jobs: -m seed=range({count})")
        datamodule, members = _members(configs, todo)
        refusal = stacking_refusal(cfg, members[0])
        if refusal:
            raise ValueError(refusal)
        stack = StackedSeedsModule(members, todo, datamodule)
        selection = _selection(cfg, stack, members[0], output_dir / STACK_DIR)
        throughput = TrainThroughput(warmup_epochs=0)
        last = ModelCheckpoint(dirpath=output_dir / STACK_DIR / "checkpoints", filename="last", monitor=None,
                               save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)
        callbacks: list[L.Callback] = [throughput, selection, last]
        progress = progress_bar_wanted((cfg.get("console") or {}).get("progress_bar", False), _is_multirun())
        if progress:
            callbacks.append(TQDMProgressBar(refresh_rate=int((cfg.get("console") or {}).get("refresh_rate", 20))))
        trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=callbacks, logger=build_logger(cfg),
                                          enable_progress_bar=progress, use_distributed_sampler=False)
        if trainer.world_size != 1:
            raise ValueError(f"seeds={count}: the stack trains in one process, but the trainer has "
                             f"{trainer.world_size}; set trainer.devices=1, or run the seeds as separate jobs: "
                             f"-m seed=range({count})")
        stack.selection = selection
        _probe(stack, datamodule)
    except BAD_INPUT as err:
        raise BadInputError(one_line(err) or type(err).__name__) from err
    template = members[0]
    monitor, mode = template.selection
    per_task = template.taskwise_selection() is not None
    num_parameters = sum(p.numel() for p in template.architecture.parameters())
    if cfg.get("print_results", True):
        print(run_header(cfg, datamodule, monitor, per_task, num_parameters, trainer, output_dir)
              + f"\n{len(todo)} seeds stacked: {todo}", flush=True)

    stale = read_results(output_dir)  # a job-level record of bad input, from before the config was fixed
    if stale is not None and stale.get("status") == "failed":
        (output_dir / RESULTS_FILE).unlink()
    # from the seeds' own hashes, so a key left out of them at its default (ABSENT_AT_DEFAULT) is
    # left out of the stack's too, and a stack interrupted before such a key was added resumes
    stack_digest = config_hash({"stack": [digests[s] for s in todo]})
    checkpoints = output_dir / STACK_DIR / "checkpoints"
    previous = output_dir / STACK_DIR / HASH_FILE
    resume = None
    if (checkpoints / "last.ckpt").exists() and previous.exists() and previous.read_text().strip() == stack_digest:
        log.info("resuming interrupted stacked training from %s", checkpoints / "last.ckpt")
        resume = str(checkpoints / "last.ckpt")
    else:
        shutil.rmtree(checkpoints, ignore_errors=True)
    previous.parent.mkdir(parents=True, exist_ok=True)
    previous.write_text(stack_digest)

    def seed_overrides(seed: int) -> list[str]:  # those of the seed's own run: seed=<s>, no seeds=K
        kept = [o for o in overrides or [] if o.split("=", 1)[0].lstrip("+~") not in ("seed", "seeds")]
        return [*kept, f"seed={seed}"]

    try:
        started = time.perf_counter()
        trainer.fit(stack, ckpt_path=resume)
        train_seconds = time.perf_counter() - started
        timing = {"train_seconds": round(train_seconds, 3),
                  "train_samples_per_second": round(throughput.samples_per_second / len(todo), 1),
                  "stacked_seeds": len(todo)}
        records = {s: read_results(seed_dir(output_dir, s)) for s in seeds if s not in todo}
        for k, seed in enumerate(todo):
            member, folder = members[k], seed_dir(output_dir, seed)
            if k in stack.failures:  # its training went non-finite: failed, as its own run would have
                failure = stack.failures[k]
                write_json_atomic(folder / RESULTS_FILE, {
                    **_started_record(resolved[seed], digests[seed], seed_overrides(seed), datamodule,
                                      (monitor, mode, per_task), num_parameters, None),
                    "status": "failed", "error": f"{type(failure).__name__}: {failure}", "failure": failure.details,
                    "stacked": {"seeds": todo, "position": k, "overrides": list(overrides or [])}})
                continue
            best_state, best_epochs, stopped = selection.seed_best(k)
            member.architecture.load_state_dict({**stack.seed_state(k), **best_state})
            epochs = {t: best_epochs.get(t, best_epochs.get(None)) for t in datamodule.schema.task_names}
            epochs_trained = stopped if stopped is not None else trainer.current_epoch
            folder.mkdir(parents=True, exist_ok=True)
            (folder / HASH_FILE).write_text(digests[seed])
            datamodule.save_preprocessing(folder)
            best = _save_best(member, folder, CHECKPOINT_NAME if per_task else "best.ckpt",
                              epochs[datamodule.schema.main_task], epochs)
            evaluator: L.Trainer = _instantiate(cfg.trainer, callbacks=[], logger=False, enable_progress_bar=False,
                                                enable_checkpointing=False, enable_model_summary=False,
                                                use_distributed_sampler=False)
            val = evaluator.validate(member, datamodule=datamodule, verbose=False)[0]
            test = evaluator.test(member, datamodule=datamodule, verbose=False)[0]
            weights = member.weighting.weights()
            record = _started_record(resolved[seed], digests[seed], seed_overrides(seed), datamodule,
                                     (monitor, mode, per_task), num_parameters, getattr(member, "transferred", None))
            record.update(_finished_fields(
                member, folder, str(best), epochs, epochs_trained, val, test, timing=timing,
                weights={"final": weights, "per_epoch": [weights] * epochs_trained},
                losses=[epoch[k] for epoch in stack.loss_history[:epochs_trained]], backbone_file=None,
            ))
            record["stacked"] = {"seeds": todo, "position": k, "overrides": list(overrides or [])}
            write_json_atomic(folder / RESULTS_FILE, record)
            records[seed] = record
    except Exception as err:  # a crash is recorded in every seed's folder, then re-raised
        for seed in todo:
            if not is_complete(seed_dir(output_dir, seed), digests[seed]):
                write_json_atomic(seed_dir(output_dir, seed) / RESULTS_FILE, {
                    **_started_record(resolved[seed], digests[seed], seed_overrides(seed), datamodule,
                                      (monitor, mode, per_task), num_parameters, None),
                    "status": "failed", "error": f"{type(err).__name__}: {err}",
                    "failure": getattr(err, "details", None)})
        raise
    if stack.failures:  # the others are recorded; the first failure is the job's (a sweep goes on)
        raise next(iter(stack.failures.values()))
    return [records[s] for s in seeds]


def _members(configs: dict[int, DictConfig], todo: list[int]):
    """One training module per seed, each initialised as that seed's own run initialises it: the
    global RNGs seeded with its seed, then its layers drawn (the data are built once, for the first;
    building them draws nothing from the global RNGs, which is checked)."""
    first = configs[todo[0]]
    L.seed_everything(todo[0], workers=True, verbose=False)
    before = torch.random.get_rng_state()
    datamodule = build_datamodule(first)
    if not torch.equal(before, torch.random.get_rng_state()):
        raise RuntimeError("building the data drew from torch's global RNG: the stacked seeds' initialisations "
                           "would differ from their own runs'")
    members = []
    for seed in todo:
        cfg = configs[seed]
        L.seed_everything(seed, workers=True, verbose=False)
        member = build_module(cfg, datamodule)
        if cfg.get("init_from"):
            member.transferred = initialise_from(member, datamodule.preprocessor, cfg.init_from)
        members.append(member)
    return datamodule, members


def _selection(cfg: DictConfig, stack: StackedSeedsModule, template, dirpath: Path) -> SeedwiseSelection:
    """Per-seed selection with the patience and min_delta of the config's ``monitor: auto`` early stopping."""
    patience, min_delta = None, 0.0
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None and "EarlyStopping" in str(node.get("_target_", "")):
            callback = _instantiate(node, **{"monitor": "auto", "mode": "max"})
            if not isinstance(callback, EarlyStopping):
                continue
            unsupported = [f"callbacks.{name}.{option}" for option in ("stopping_threshold", "divergence_threshold")
                           if getattr(callback, option, None) is not None]
            unsupported += [f"callbacks.{name}.monitor"] if node.get("monitor") != "auto" else []
            unsupported += [f"callbacks.{name}.check_finite=false"] if not callback.check_finite else []
            if unsupported:
                raise ValueError(f"seeds={cfg.seeds}: {', '.join(unsupported)} cannot be applied per seed; remove "
                                 f"them, or run the seeds as separate jobs: -m seed=range({cfg.seeds})")
            patience, min_delta = callback.patience, callback.min_delta
    taskwise = template.taskwise_selection()
    per_task = None
    if taskwise is not None:
        monitors, keys = taskwise
        prefix = "architecture."
        per_task = {t: (monitors[t], [k[len(prefix):] for k in keys[t] if k.startswith(prefix)]) for t in monitors}
    return SeedwiseSelection(stack, template.selection, per_task, dirpath, patience, min_delta)


def _probe(stack: StackedSeedsModule, datamodule) -> None:
    """One stacked forward pass on a few training rows, so an architecture that cannot be stacked
    (an operation ``vmap`` has no rule for) is refused before anything is written."""
    table = datamodule.tables["train"]
    rows = torch.arange(min(8, len(table)), device=next(iter(table.features.values())).device)
    batch = table[torch.cat([rows] * len(stack.seeds))]
    try:
        stack.training_step(batch, 0).backward()  # the backward too: vmap may run an op forward but not back
    except RuntimeError as err:
        raise ValueError(f"seeds={len(stack.seeds)}: this architecture cannot be stacked ({one_line(err)}); run the "
                         f"seeds as separate jobs: -m seed=range({len(stack.seeds)})") from err
    finally:
        stack._epoch_loss, stack._epoch_steps = None, 0
        stack.zero_grad(set_to_none=True)


def _save_best(member, folder: Path, name: str, epoch: int | None, epochs: dict[str, int | None]) -> Path:
    """The seed's selected weights as a weights-only checkpoint (what ``RunScorer`` loads), named as
    its own run names it, written atomically; ``epoch`` is 0-based there, as Lightning stores it."""
    path = folder / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": member.state_dict(), "epoch": (epoch or 1) - 1, "mtlrec_best_epochs": epochs}, tmp)
    os.replace(tmp, path)
    return path
