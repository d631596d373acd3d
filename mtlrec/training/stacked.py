"""K seeds of one configuration trained as one stacked model (``seeds=K``).

Paper tables average many seeds, and a small recommendation model leaves a device idle between
its kernel launches. Here the K models — each built exactly as its own run would build it, so each
keeps its own initialisation — have their parameters stacked along a new first axis
(``torch.func.stack_module_state``), and one step runs all K forward and backward passes as batched
ops (``torch.func.vmap`` over ``functional_call``). Seed k's rows are its own run's batch
(:class:`~mtlrec.data.table.StackedIndexBatchSampler`), its loss is its own, and the seeds' losses
are summed: their parameters are disjoint, so each gets exactly its own gradient, and an
element-wise optimizer (Adam, SGD) steps each seed as its own run would.

Each seed is validated every epoch on its own metric collection, and is selected and early-stopped
on its own (:class:`SeedwiseSelection`, the semantics of Lightning's ``ModelCheckpoint`` and
``EarlyStopping`` per seed, and per task for independent networks): a seed that stopped keeps its
best weights while the others go on, and the stack ends when every seed has stopped. Testing,
checkpoints and ``results.json`` are then each seed's own, through the ordinary single-model path
(:func:`mtlrec.train.run_stacked`).

What is refused (:func:`stacking_refusal`): a weighting that learns from the losses (GradNorm,
uncertainty, DWA, the aggregators keep per-seed state), domain adaptation, fine-tuning options,
an image backbone, ``compile=true``, gradient-conflict sampling, several devices, gradient
clipping, gradient accumulation and fp16 (one norm, one accumulation and one loss scaler would be
shared by the seeds), and callbacks other than the default checkpoint and early stopping.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.table import Batch
from mtlrec.training.guard import NonFiniteError
from mtlrec.training.module import MultiTaskModule, _in_sample_space, full_precision
from mtlrec.training.selection import TaskwiseSelection


def stacking_refusal(cfg: DictConfig, member: MultiTaskModule) -> str | None:
    """Why ``cfg`` cannot be trained as a stack of seeds (one line naming the option), or ``None``."""
    k = cfg.seeds
    weighting = cfg.weighting._target_.rsplit(".", 1)[-1]
    if not member.weighting.stackable:
        return (f"seeds={k}: {weighting} learns from each seed's losses, so K seeds cannot share one weighting; "
                f"use weighting=fixed or data_volume, or run the seeds as separate jobs: -m seed=range({k})")
    finetune = cfg.get("finetune") or {}
    asked = [f"finetune.{name}" for name in ("freeze", "lr", "l2sp") if finetune.get(name)]
    asked += ["adapt"] if member.adaptation is not None else []
    asked += ["compile=true"] if cfg.get("compile") else []
    asked += ["insight.conflict_every"] if (cfg.get("insight") or {}).get("conflict_every") else []
    asked += ["backbone"] if (cfg.get("backbone") or {}).get("_target_") else []
    trainer = cfg.get("trainer") or {}
    asked += ["trainer.gradient_clip_val"] if trainer.get("gradient_clip_val") else []  # one norm over all seeds
    asked += ["trainer.accumulate_grad_batches"] if trainer.get("accumulate_grad_batches", 1) != 1 else []
    asked += [f"trainer.precision={trainer.precision}"] if str(trainer.get("precision", "")).startswith("16") else []
    extra = sorted(set(cfg.get("callbacks") or {}) - {"model_checkpoint", "last_checkpoint", "early_stopping"})
    asked += [f"callbacks.{name}" for name in extra if (cfg.callbacks[name] or {}).get("_target_")]
    if not ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get("_target_"):
        asked += ["callbacks.model_checkpoint=null"]
    if asked:
        return (f"seeds={k}: {', '.join(asked)} cannot be trained as a stack of seeds (one model of K stacked "
                f"copies, one process); remove {'it' if len(asked) == 1 else 'them'}, or run the seeds as "
                f"separate jobs: -m seed=range({k})")
    return None


class StackedSeedsModule(L.LightningModule):
    """The K members' architectures as one stacked model, trained with automatic optimisation.

    ``members``: one :class:`MultiTaskModule` per seed, as each seed's own run builds it (same
    schema, weighting kind and optimizer); their architectures' current weights are the stack's
    initial weights. ``seeds``: the members' seeds, in order.
    """

    def __init__(self, members: list[MultiTaskModule], seeds: list[int], datamodule: TabularDataModule):
        super().__init__()
        self.seeds = list(seeds)
        self.template = members[0]  # the objectives, weighting and optimizer factory every seed shares
        params, buffers = stack_module_state([m.architecture for m in members])
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[name].detach().clone(),
                                                      requires_grad=params[name].requires_grad) for name in self.names])
        self.buffer_names = list(buffers)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[name].detach().clone())
        # the layers' code, with no storage of its own: functional_call runs it on the stacked weights
        object.__setattr__(self, "_base", copy.deepcopy(members[0].architecture).to("meta"))
        object.__setattr__(self, "_datamodule", datamodule)
        objectives = self.template.objectives
        self.seed_metrics = nn.ModuleList(
            nn.ModuleDict({t: nn.ModuleDict(obj.metrics()) for t, obj in objectives.items()}) for _ in self.seeds
        )
        self._train_step = vmap(self._seed_losses, in_dims=(0, 0, 0, 0, 0, None), randomness="different")
        self._eval_logits = vmap(self._seed_logits, in_dims=(0, 0, None), randomness="different")
        self._epoch_loss: Tensor | None = None  # [K, T] sums of the step losses
        self.selection: SeedwiseSelection | None = None  # set by the caller: which seeds are still training
        self.failures: dict[int, NonFiniteError] = {}  # position -> why that seed's run failed
        self._epoch_steps = 0
        self.loss_history: list[list[dict[str, float]]] = []  # per epoch, per seed: task -> mean loss
        self.validation_values: list[dict[str, float]] = []  # per seed, the last validation

    def train(self, mode: bool = True) -> StackedSeedsModule:
        """Lightning switches the module between training and evaluation; the layers' code, kept
        outside the module tree, follows (dropout)."""
        super().train(mode)
        if getattr(self, "_base", None) is not None:
            self._base.train(mode)
        return self

    # -- the stacked weights -----------------------------------------------------------------
    def _weights(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        buffers = {name: getattr(self, f"buffer_{i}") for i, name in enumerate(self.buffer_names)}
        return dict(zip(self.names, self.stacked)), buffers

    def seed_state(self, k: int) -> dict[str, Tensor]:
        """Seed ``k``'s weights as its architecture's ``state_dict``."""
        params, buffers = self._weights()
        return {name: t[k].detach().clone() for name, t in (*params.items(), *buffers.items())}

    def stacked_key(self, name: str) -> str:
        """The stack's ``state_dict`` key holding the architecture's parameter or buffer ``name``."""
        if name in self.names:
            return f"stacked.{self.names.index(name)}"
        return f"buffer_{self.buffer_names.index(name)}"

    # -- one seed's computation (vmapped over the seeds) --------------------------------------
    def _seed_losses(self, params, buffers, features, labels, masks, num_rows) -> dict[str, Tensor]:
        batch = Batch(features, labels, masks, num_rows)
        return self.template.task_losses(functional_call(self._base, (params, buffers), (batch,)), batch)

    def _seed_logits(self, params, buffers, batch: Batch) -> dict[str, Tensor]:
        return functional_call(self._base, (params, buffers), (batch,)).logits

    # -- training ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # the datamodule is not given to fit (the stack brings its own loaders): let it place its
        # tables on the accelerator, as it does for a run of its own
        self._datamodule.trainer = self.trainer
        self._datamodule.setup(stage)

    def train_dataloader(self):
        return self._datamodule.stacked_train_dataloader(self.seeds)

    def val_dataloader(self):
        return self._datamodule.val_dataloader()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.template.optimizer_factory(list(self.stacked))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        k = len(self.seeds)
        per_seed = lambda group: {name: t.unflatten(0, (k, -1)) for name, t in group.items()}  # noqa: E731
        params, buffers = self._weights()
        losses = self._train_step(params, buffers, per_seed(batch.features), per_seed(batch.labels),
                                  per_seed(batch.masks), batch.num_rows // k)  # task -> [K]
        combined: list[Tensor] = []  # the weighting's own combination of the [K] losses (Weighting.stackable)
        self.template.weighting.backward(losses, lambda loss, **_: combined.append(loss))
        step = torch.stack([losses[t].detach() for t in self.template.trained_tasks], dim=1)  # [K, T]
        self._epoch_loss = step if self._epoch_loss is None else self._epoch_loss + step
        self._epoch_steps += 1
        return combined[0].sum()

    def on_train_epoch_end(self) -> None:
        if not self._epoch_steps:
            return
        means = (self._epoch_loss / self._epoch_steps).tolist()  # one host read per epoch
        tasks = self.template.trained_tasks
        epoch = self.current_epoch + 1
        for k, row in enumerate(means):
            # a seed whose own run had ended before this epoch is not checked (its run saw no such loss);
            # one that goes non-finite fails as its own run would, and the others train on (the seeds'
            # parameters are disjoint, so its NaNs reach no other seed)
            ended = self.selection is not None and self.selection.seed_stopped_before(k, epoch)
            bad = next(((t, v) for t, v in zip(tasks, row) if not math.isfinite(v)), None)
            if bad and not ended and k not in self.failures:
                self.failures[k] = NonFiniteError("training loss", bad[0], self.global_step, bad[1])
                if self.selection is not None:
                    self.selection.stop_seed(k, epoch, self.trainer)
        self.loss_history.append([dict(zip(tasks, row)) for row in means])
        self._epoch_loss, self._epoch_steps = None, 0

    # -- validation --------------------------------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        params, buffers = self._weights()
        with full_precision(self.device):
            logits = self._eval_logits(params, buffers, batch)  # task -> [K, B, ...]
        for task, objective in self.template.objectives.items():
            for k in range(len(self.seeds)):
                outputs = _SeedOutputs({task: logits[task][k]})
                seed_logits, target = _in_sample_space(outputs, batch, task)
                if target.numel():
                    objective.update(self.seed_metrics[k][task], seed_logits, target)

    def on_validation_epoch_end(self) -> None:
        schema, objectives = self.template.schema, self.template.objectives
        values: list[dict[str, float]] = []
        for k, seed in enumerate(self.seeds):
            seed_values = {}
            for task, collection in self.seed_metrics[k].items():
                for name, value in objectives[task].compute(dict(collection)).items():
                    seed_values[schema.task(task).metric_key("val", name)] = float(value)
                for metric in collection.values():
                    metric.reset()
            values.append(seed_values)
        self.validation_values = values
        # per seed, under its own key: what SeedwiseSelection monitors (and the logger writes)
        self.log_dict({seed_key(key, seed): v for k, seed in enumerate(self.seeds) for key, v in values[k].items()})

    # Per-epoch loss histories travel in checkpoints, so a resumed stack reports its whole trajectory.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mtlrec_stacked_losses"] = self.loss_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.loss_history = list(checkpoint.get("mtlrec_stacked_losses", []))


class _SeedOutputs:
    """The few fields of :class:`~mtlrec.models.base.TaskOutputs` that ``_in_sample_space`` reads."""

    def __init__(self, logits: dict[str, Tensor]):
        self.logits = logits


def seed_key(key: str, seed: int) -> str:
    """A validation metric's key for one seed of a stack: ``val/income/auc@seed=3``."""
    return f"{key}@seed={seed}"


class SeedwiseSelection(TaskwiseSelection):
    """:class:`TaskwiseSelection` over the units of a stack: one per seed (per seed and task for
    independent networks), each with its own monitor, patience and best weights — the slices of the
    stacked tensors that belong to it."""

    def __init__(self, stack: StackedSeedsModule, monitor: tuple[str, str],
                 per_task: Mapping[str, tuple[tuple[str, str], list[str]]] | None, dirpath, patience, min_delta):
        monitors, keys, self.position = {}, {}, {}
        for k, seed in enumerate(stack.seeds):
            units = per_task or {None: (monitor, [*stack.names, *stack.buffer_names])}
            for task, ((key, mode), names) in units.items():
                unit = f"seed={seed}" if task is None else f"seed={seed}/{task}"
                monitors[unit] = (seed_key(key, seed), mode)
                keys[unit] = list(names)
                self.position[unit] = k
        object.__setattr__(self, "_stack", stack)
        super().__init__(monitors, keys, dirpath, patience=patience, min_delta=min_delta)

    def _snapshot(self, state: Mapping[str, Tensor], unit: str) -> dict[str, Tensor]:
        k = self.position[unit]
        return {name: state[self._stack.stacked_key(name)][k].detach().clone() for name in self.state_keys[unit]}

    def seed_stopped_before(self, k: int, epoch: int) -> bool:
        """Whether seed ``k``'s own run had ended before ``epoch`` (1-based)."""
        stops = [self.stopped_epoch[u] for u, position in self.position.items() if position == k]
        return all(e is not None and e < epoch for e in stops)

    def stop_seed(self, k: int, epoch: int, trainer: L.Trainer) -> None:
        """End seed ``k``'s run at ``epoch`` (its training failed); the stack ends when no seed trains."""
        for unit, position in self.position.items():
            if position == k and self.stopped_epoch[unit] is None:
                self.stopped_epoch[unit] = epoch
        if all(e is not None for e in self.stopped_epoch.values()):
            trainer.should_stop = True

    def _save(self, trainer: L.Trainer) -> None:
        """Nothing on disk per epoch: the best weights travel in ``last.ckpt`` (this callback's state)
        and each seed's best checkpoint is written once, after the stack ends."""

    def seed_best(self, k: int) -> tuple[dict[str, Tensor], dict[str | None, int | None], int | None]:
        """Seed ``k``'s best weights (those of its units that have a best), its units' best epochs
        (task -> epoch; ``None`` key for a shared model), and the epoch it stopped (``None``: never)."""
        state: dict[str, Tensor] = {}
        epochs: dict[str | None, int | None] = {}
        stopped: list[int | None] = []
        for unit, position in self.position.items():
            if position != k:
                continue
            state.update(self.best_state.get(unit, {}))
            task = unit.split("/", 1)[1] if "/" in unit else None
            epochs[task] = self.best_epoch[unit]
            stopped.append(self.stopped_epoch[unit])
        return state, epochs, (max(stopped) if all(e is not None for e in stopped) else None)
