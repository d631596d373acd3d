"""Model selection per task, for architectures whose tasks share no parameter.

A shared architecture has one set of weights, so one epoch must be chosen for all tasks: the main
task's validation metric chooses it (Lightning's ``ModelCheckpoint`` and ``EarlyStopping``). When
every task has its own network (``single_task``), one run holds what would be T separate runs, and
choosing every network at the *main* task's best epoch would report the auxiliary networks at an
epoch that suited another task. :class:`TaskwiseSelection` instead gives each network what a run of
its own would give it, with the semantics of the two Lightning callbacks it replaces:

* its own early stopping (``EarlyStopping``): task k stops when its validation metric has not
  improved by more than ``min_delta`` for ``patience`` validations (a non-finite value stops it at
  once, as ``check_finite`` does); later epochs never change its choice (a separate run would have
  ended), and the run ends when every task has stopped;
* its own best epoch (``ModelCheckpoint``): the strictly best value so far, ``min_delta`` aside.
  ``best-per-task.ckpt`` holds each network's weights from its own best epoch (weights only), so
  validation, test and ``RunScorer`` from it give each task its own best.

The test split is never looked at. The state (best scores, waits, the best weights) travels in
``last.ckpt``, so an interrupted run resumes with the same choices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

CHECKPOINT_NAME = "best-per-task.ckpt"
_STATE = ("best_score", "best_epoch", "reference", "wait", "stopped_epoch", "best_state")


class TaskwiseSelection(L.Callback):
    """Per-task checkpointing and early stopping.

    Args:
        monitors: task -> (validation metric key, "max" | "min").
        state_keys: task -> the ``state_dict`` keys of the module that belong to that task's network.
        dirpath: folder of the per-task best checkpoint.
        patience: validations without improvement before a task stops; ``None`` never stops early.
        min_delta: the smallest change that counts as an improvement for early stopping.
    """

    def __init__(
        self,
        monitors: Mapping[str, tuple[str, str]],
        state_keys: Mapping[str, list[str]],
        dirpath: str | os.PathLike,
        patience: int | None = None,
        min_delta: float = 0.0,
    ):
        self.monitors = dict(monitors)
        self.state_keys = {t: list(keys) for t, keys in state_keys.items()}
        self.dirpath = Path(dirpath)
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        tasks = list(self.monitors)
        self.best_score: dict[str, float | None] = dict.fromkeys(tasks)  # what the checkpoint keeps
        self.best_epoch: dict[str, int | None] = dict.fromkeys(tasks)  # 1-based
        self.reference: dict[str, float | None] = dict.fromkeys(tasks)  # early stopping's best
        self.wait: dict[str, int] = dict.fromkeys(tasks, 0)
        self.stopped_epoch: dict[str, int | None] = dict.fromkeys(tasks)  # 1-based
        self.best_state: dict[str, dict[str, Tensor]] = {}
        self._pending: dict[str, float] | None = None  # this epoch's validation values

    @classmethod
    def replacing(cls, early_stopping: L.pytorch.callbacks.EarlyStopping | None, **kwargs: Any) -> TaskwiseSelection:
        """Per-task selection with an ``EarlyStopping``'s patience and min_delta (options it cannot
        apply per task are refused, not dropped)."""
        if early_stopping is None:
            return cls(**kwargs)
        unsupported = [name for name in ("stopping_threshold", "divergence_threshold")
                       if getattr(early_stopping, name, None) is not None]
        if unsupported:
            raise ValueError(
                f"callbacks.early_stopping: {unsupported} cannot be applied per task (single_task selects each "
                f"task's network on its own); remove them, or use a shared architecture"
            )
        return cls(patience=early_stopping.patience, min_delta=early_stopping.min_delta, **kwargs)

    @property
    def best_model_path(self) -> str:
        path = self.dirpath / CHECKPOINT_NAME
        return str(path) if path.is_file() else ""

    def _better(self, task: str, value: float, than: float | None, delta: float) -> bool:
        if than is None:
            return True
        return value > than + delta if self.monitors[task][1] == "max" else value < than - delta

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # trainer.validate() after fit, or the sanity check: not a training epoch
        metrics = trainer.callback_metrics
        missing = [key for key, _ in self.monitors.values() if key not in metrics]
        if missing:
            raise KeyError(
                f"per-task selection: validation logged no {missing} (does each task have labelled "
                f"validation rows?); logged: {sorted(metrics)}"
            )
        self._pending = {task: float(metrics[key]) for task, (key, _) in self.monitors.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped_epoch and all(e is not None for e in self.stopped_epoch.values()):
            trainer.should_stop = True  # resumed after every task had stopped: train nothing more

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the epoch's validation and before ModelCheckpoint writes last.ckpt (Lightning
        # calls checkpoint callbacks last), so last.ckpt holds this epoch's decisions.
        if self._pending is None:
            return  # no validation this epoch
        values, self._pending = self._pending, None
        epoch = trainer.current_epoch + 1
        state = pl_module.state_dict()
        improved = False
        for task, value in values.items():
            if self.stopped_epoch[task] is not None:
                continue
            if not math.isfinite(value):
                self.stopped_epoch[task] = epoch
                continue
            if self._better(task, value, self.best_score[task], 0.0):
                self.best_score[task], self.best_epoch[task] = value, epoch
                self.best_state[task] = self._snapshot(state, task)
                improved = True
            if self._better(task, value, self.reference[task], self.min_delta):
                self.reference[task], self.wait[task] = value, 0
            else:
                self.wait[task] += 1
                if self.patience is not None and self.wait[task] >= self.patience:
                    self.stopped_epoch[task] = epoch
        if improved:
            self._save(trainer)
        if all(e is not None for e in self.stopped_epoch.values()):
            trainer.should_stop = True

    def _snapshot(self, state: Mapping[str, Tensor], task: str) -> dict[str, Tensor]:
        """A copy of the weights of ``task``'s network, from the module's ``state_dict``."""
        return {k: state[k].detach().clone() for k in self.state_keys[task]}

    def _save(self, trainer: L.Trainer) -> None:
        """Weights only: the current model with each task's network replaced by its best weights."""
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / CHECKPOINT_NAME
        tmp = self.dirpath / f".{CHECKPOINT_NAME}.tmp"
        trainer.save_checkpoint(tmp, weights_only=True)
        checkpoint = torch.load(tmp, map_location="cpu", weights_only=False)
        for weights in self.best_state.values():
            checkpoint["state_dict"].update(weights)
        checkpoint["mtlrec_best_epochs"] = dict(self.best_epoch)
        torch.save(checkpoint, tmp)
        os.replace(tmp, final)

    def summary(self) -> dict[str, dict[str, Any]]:
        """task -> best epoch (1-based), its validation score, and the epoch it stopped (or None)."""
        return {
            t: {"best_epoch": self.best_epoch[t], "best_score": self.best_score[t], "stopped_epoch": self.stopped_epoch[t]}
            for t in self.monitors
        }

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in _STATE:
            setattr(self, name, dict(state_dict[name]))
