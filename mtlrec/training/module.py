"""One LightningModule for every architecture and every weighting.

It computes per-task losses on each task's own sample space, hands them to the weighting (which
fills the gradients), and steps the optimizer. It never asks which architecture or weighting it
holds: what it needs comes through :class:`Architecture` and :class:`Weighting`.
Manual optimisation is used for every scheme, so loss-based and gradient-based weightings take the
same path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch
from mtlrec.insight.conflict import GradientConflict, conflict_parameters
from mtlrec.insight.gates import ExpertCapture, GateStatistics
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.training.collective import average_gradients
from mtlrec.training.compiled import compiled_forward
from mtlrec.training.guard import NonFiniteGuard
from mtlrec.training.objectives import objective_for
from mtlrec.transfer.adaptation import DomainAdaptation
from mtlrec.transfer.l2sp import L2SP
from mtlrec.transfer.parts import part_options
from mtlrec.weighting.base import Weighting

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SPLITS = ("val", "test")


class MultiTaskModule(L.LightningModule):
    def __init__(
        self,
        schema: Schema,
        architecture: Architecture,
        weighting: Weighting,
        optimizer: OptimizerFactory = partial(torch.optim.Adam, lr=1e-3),
        labelled_counts: Mapping[str, int] | None = None,
        part_lr: Mapping[str, float] | None = None,
        adaptation: DomainAdaptation | None = None,
        conflict_every: int = 0,
        compile_model: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.schema = schema
        self.architecture = architecture
        self.weighting = weighting
        self.optimizer_factory = optimizer
        self.part_lr = dict(part_lr or {})  # part -> learning rate (finetune.lr), see mtlrec.transfer.parts
        self.l2sp: L2SP | None = None  # a prior toward the source weights (finetune.l2sp), set after init_from
        self.adaptation = adaptation  # a domain-adaptation loss on the shared representation (adapt=dann|coral)
        self._total_steps = math.inf
        self.objectives = {t.name: objective_for(t) for t in schema.tasks}
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict({t: nn.ModuleDict(obj.metrics()) for t, obj in self.objectives.items()})
                for split in SPLITS
            }
        )
        self.trained_tasks = architecture.trained_tasks()
        counts = dict(labelled_counts or {t: 1 for t in schema.task_names})
        shared = architecture.shared_model()
        # task-gradient conflict on the shared parameters, every k steps (insight.conflict_every)
        measured, where = conflict_parameters(shared.shared_parameters, shared.encoder_parameters)
        self.conflict = GradientConflict(self.trained_tasks, measured, conflict_every, where)
        self.weighting.setup(
            self.trained_tasks, shared, {t: counts[t] for t in self.trained_tasks if t in counts},
            task_kinds={t.name: t.kind for t in schema.tasks if t.name in self.trained_tasks},
        )
        self._epoch_loss: dict[str, Tensor] = {}
        self._epoch_auxiliary: dict[str, Tensor] = {}
        self._epoch_weights: Tensor | None = None  # the step weights' sum over the epoch
        self._epoch_steps = 0
        self.guard = NonFiniteGuard(self.trained_tasks)
        self.weight_history: list[dict[str, float]] = []
        self.loss_history: list[dict[str, float]] = []
        self.gate_statistics = GateStatistics()  # gate utilisation on validation (mtlrec.insight.gates)
        self.gate_history: list[dict] = []  # per fitting epoch: {"epoch" (1-based, as best_epoch), "gates", "experts"}
        self._experts: ExpertCapture | None = None
        self.compile_model = compile_model  # compile=true: the training forward through torch.compile
        self._train_forward: Callable[[Batch], TaskOutputs] | None = None

    @property
    def selection(self) -> tuple[str, str]:
        """(monitored key, mode): the main task's validation selection metric."""
        metric, mode = self.objectives[self.schema.main_task].selection
        return self.schema.task(self.schema.main_task).metric_key("val", metric), mode

    def check_trainer(self, precision: str, world_size: int) -> None:
        """Refuse, in one line, a trainer under which a gradient set outside the trainer's backward
        would be silently wrong: the weighting's (:meth:`Weighting.check_trainer`), the adaptation
        loss's and L2-SP's (added to ``.grad`` after it). fp16's loss scaler would divide them by its
        scale; a multi-process strategy would not all-reduce them."""
        self.weighting.check_trainer(precision, world_size)
        parts = (("adapt", self.adaptation), ("finetune.l2sp", self.l2sp))
        outside = [name for name, part in parts if part is not None]
        if outside and str(precision).startswith("16"):
            raise ValueError(f"trainer.precision={precision}: {' and '.join(outside)} add their gradients outside "
                             "the trainer's backward, which fp16's loss scaling does not see (the scaler would divide "
                             "them by its scale); use trainer.precision=32 or bf16-mixed")
        if self.adaptation is not None and world_size > 1:
            raise ValueError("adapt: the adaptation gradient is added outside the trainer's backward, which a "
                             f"{world_size}-process strategy does not all-reduce; train on one device "
                             "(trainer.devices=1)")

    def taskwise_selection(self) -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]] | None:
        """For independent per-task networks: (task -> its own (monitored key, mode), task -> the
        state_dict keys of its network), so each network is selected on its own validation metric
        (see :mod:`mtlrec.training.selection`). ``None`` when tasks share parameters."""
        networks = self.architecture.task_networks()
        if networks is None:
            return None
        owner = {id(t): task for task, net in networks.items() for t in (*net.parameters(), *net.buffers())}
        keys: dict[str, list[str]] = {task: [] for task in networks}
        for name, tensor in (*self.named_parameters(), *self.named_buffers()):
            if id(tensor) in owner:
                keys[owner[id(tensor)]].append(name)
        monitors = {}
        for task in networks:
            metric, mode = self.objectives[task].selection
            monitors[task] = (self.schema.task(task).metric_key("val", metric), mode)
        return monitors, keys

    def forward(self, batch: Batch) -> TaskOutputs:
        return self.architecture(batch)

    def on_fit_start(self) -> None:
        # kept out of the module tree (object.__setattr__): the compiled wrapper shares the
        # architecture's parameters, and must not add a second copy of their names to state_dict
        forward = compiled_forward(self.architecture, self.device) if self.compile_model else self.architecture
        object.__setattr__(self, "_train_forward", forward)

    # -- losses ------------------------------------------------------------------------------
    def task_losses(self, outputs: TaskOutputs, batch: Batch) -> dict[str, Tensor]:
        """Mean loss per trained task over the rows in its sample space (all rows when unmasked),
        plus the auxiliary terms the architecture attached to the task."""
        losses = {}
        for task in self.trained_tasks:
            loss = _masked_loss(self.objectives[task], outputs.logits[task], batch.labels[task], batch.masks.get(task))
            for term in outputs.auxiliary.get(task, {}).values():
                loss = loss + term
            losses[task] = loss
        return losses

    # -- training ----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # only the architecture: a weighting's learnable weights have their own optimizer
        overrides = part_options(self.architecture, self.part_lr) if self.part_lr else {}
        if self.l2sp is not None:  # L2-SP replaces weight decay on the parameters it covers
            for key in self.l2sp.parameter_ids():
                overrides[key] = {**overrides.get(key, {}), "weight_decay": 0.0}
        groups = parameter_groups(self.architecture, overrides or None)
        extra = [p for p in self.adaptation.parameters()] if self.adaptation is not None else []
        if extra:  # DANN's domain classifier learns at the model's learning rate
            groups = [*(groups if isinstance(groups, list) else [{"params": list(groups)}]), {"params": extra}]
        return self.optimizer_factory(groups)

    def on_train_start(self) -> None:
        self._total_steps = float(self.trainer.estimated_stepping_batches)
        # data parallel with a weighting that sets gradients itself: DDP's all-reduce (which sees
        # only the trainer's backward) is off for its backward, and every gradient is averaged after
        # it (the weighting decided on global quantities, see Weighting.sets_gradients)
        self._averages_gradients = self.weighting.sets_gradients and self.trainer.world_size > 1

    def _weighting_backward(self, losses: Mapping[str, Tensor], features: Tensor | None) -> None:
        if not getattr(self, "_averages_gradients", False):
            self.weighting.backward(losses, self.manual_backward, features=features)
            return
        with self.trainer.strategy.block_backward_sync():
            self.weighting.backward(losses, self.manual_backward, features=features)
        average_gradients(self.architecture.parameters())

    def _adaptation_gradients(self, outputs: TaskOutputs, batch: Batch) -> list[tuple[nn.Parameter, Tensor]]:
        """The adaptation loss's gradients, taken before the weighting's backward frees the graph
        (and added after it, whatever the weighting wrote into ``.grad``)."""
        shared = outputs.shared if outputs.shared is not None else outputs.features
        if shared is None:
            raise ValueError("adapt: this architecture gives no shared representation (each task has its own "
                             "network); domain adaptation needs one, e.g. arch=shared_bottom or arch=mmoe")
        progress = min(1.0, self.global_step / self._total_steps) if math.isfinite(self._total_steps) else 1.0
        loss = self.adaptation(shared, batch.domain, progress)
        key = "train/adapt/loss"
        self._epoch_auxiliary[key] = self._epoch_auxiliary.get(key, 0.0) + loss.detach()
        params = [p for p in (*self.architecture.parameters(), *self.adaptation.parameters()) if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [(p, g) for p, g in zip(params, grads) if g is not None]

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        step = self.global_step  # 0-based; the optimizer step below counts it
        forward = self.architecture if self._train_forward is None else self._train_forward  # (compile=true)
        outputs = forward(batch)
        losses = self.task_losses(outputs, batch)
        self._accumulate_auxiliary(outputs)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        adapted = self._adaptation_gradients(outputs, batch) if self.adaptation is not None else []
        if self.conflict.due(step):  # before the weighting's backward frees the graph
            self.conflict.measure(step, losses)
        self._weighting_backward(losses, outputs.features)
        for param, grad in adapted:
            param.grad = grad if param.grad is None else param.grad + grad
        if self.l2sp is not None:
            self.l2sp.add_gradient()
        optimizer.step()
        # no host sync per step: the weights stay a tensor ([T], trained_tasks order) and the
        # guard folds its checks into tensors, read every check_every steps
        weights = self.weighting.weight_values(self.device)
        self.guard.observe(losses, weights, step)
        self._accumulate(losses, weights)
        # The logger only writes every `log_every_n_steps` steps; calling self.log on the other
        # steps would cost ~2 ms each for nothing (measured: a third of a small model's step).
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log_dict({f"weight/{t}": weights[j] for j, t in enumerate(self.trained_tasks)}, on_step=True,
                          on_epoch=False)
            self.log("train/loss", sum(l.detach() for l in losses.values()), on_step=True, on_epoch=False)

    def _accumulate(self, losses: Mapping[str, Tensor], weights: Tensor) -> None:
        for t, loss in losses.items():
            self._epoch_loss[t] = self._epoch_loss.get(t, 0.0) + loss.detach()
        self._epoch_weights = weights if self._epoch_weights is None else self._epoch_weights + weights
        self._epoch_steps += 1

    def _accumulate_auxiliary(self, outputs: TaskOutputs) -> None:
        for task, terms in outputs.auxiliary.items():
            for name, value in terms.items():
                key = f"train/{task}/{name}"
                self._epoch_auxiliary[key] = self._epoch_auxiliary.get(key, 0.0) + value.detach()

    def on_train_epoch_end(self) -> None:
        # the epoch's mean conflict per pair to the logger (each sample is in results.json)
        self.log_dict({f"conflict/{pair}": value for pair, value in self.conflict.epoch_means().items()})
        self.conflict.flush()
        self.guard.check()  # before a NaN epoch mean reaches the weighting (DWA) or the history
        if not self._epoch_steps:
            return
        if self._epoch_auxiliary:
            self.log_dict({k: float(v) / self._epoch_steps for k, v in self._epoch_auxiliary.items()})
            self._epoch_auxiliary = {}
        mean_losses = {t: float(v) / self._epoch_steps for t, v in self._global_means(self._epoch_loss).items()}
        weight_sums = self._epoch_weights.tolist()
        self.weight_history.append({t: weight_sums[j] / self._epoch_steps for j, t in enumerate(self.trained_tasks)})
        self.loss_history.append(mean_losses)
        self.log_dict({f"train/{t}/loss": v for t, v in mean_losses.items()})
        self.weighting.on_train_epoch_end(mean_losses)
        self._epoch_loss, self._epoch_weights, self._epoch_steps = {}, None, 0

    def _global_means(self, sums: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """Per-process epoch sums, averaged over the processes of a data-parallel run (each takes
        the same number of steps on its share of every global batch): the epoch's losses then are
        the whole training split's, on every process, for the history and for DWA. One collective
        per epoch."""
        if self._trainer is None or self.trainer.world_size == 1 or not sums:
            return sums
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in sums.values()])
        reduced = self.trainer.strategy.reduce(stacked, reduce_op="mean")
        return dict(zip(sums, reduced))

    # Per-epoch histories travel in checkpoints, so a resumed run reports its whole trajectory.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mtlrec_history"] = {"weights": self.weight_history, "losses": self.loss_history,
                                         "gates": self.gate_history, "conflict": self.conflict.snapshot()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Only a resumed fit takes the histories back. validate()/test() from the best checkpoint
        # must keep the whole run's histories, not the ones saved at the best epoch.
        if self._trainer is not None and self.trainer.state.fn != TrainerFn.FITTING:
            return
        history = checkpoint.get("mtlrec_history", {})
        self.weight_history = list(history.get("weights", []))
        self.loss_history = list(history.get("losses", []))
        self.gate_history = list(history.get("gates", []))
        self.conflict.history = list(history.get("conflict", []))

    # -- evaluation --------------------------------------------------------------------------
    def _update_metrics(self, split: str, batch: Batch) -> None:
        with full_precision(self.device):
            outputs = self(batch)
        if split == "val" and outputs.gates:
            self.gate_statistics.update(outputs.gates)
        for task, objective in self.objectives.items():
            logits, target = _in_sample_space(outputs, batch, task)
            if target.numel():
                objective.update(self.metrics[split][task], logits, target)

    def _log_metrics(self, split: str) -> None:
        values = {}
        for task, collection in self.metrics[split].items():
            spec = self.schema.task(task)
            for name, value in self.objectives[task].compute(dict(collection)).items():
                values[spec.metric_key(split, name)] = value
            for metric in collection.values():
                metric.reset()
        self.log_dict(values)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._update_metrics("val", batch)

    def _fitting_epoch(self) -> bool:
        """A validation that belongs to a training epoch (not the sanity check, not validate())."""
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        return fitting and not self.trainer.sanity_checking

    def on_validation_epoch_start(self) -> None:
        # the experts' outputs on the first validation batch, for the collapse check
        self._experts = ExpertCapture(self.architecture) if self._fitting_epoch() else None

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        # one entry per training epoch: gate utilisation and the experts' pairwise similarity
        experts = self._experts.report() if self._experts is not None else {}
        # gated models only (the collapse check is what makes their gate statistics meaningful)
        if self.gate_statistics.sums and self._fitting_epoch():
            if self.trainer.world_size > 1:  # every process saw its share of the rows: add them up
                reduce = self.trainer.strategy.reduce
                self.gate_statistics.sums = {name: [reduce(part, reduce_op="sum") for part in parts]
                                             for name, parts in self.gate_statistics.sums.items()}
            self.gate_history.append({"epoch": self.current_epoch + 1, "gates": self.gate_statistics.compute(),
                                      "experts": experts})
        self._experts = None
        self.gate_statistics.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._update_metrics("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")


def full_precision(device: torch.device):
    """A context that turns autocast off: validation and test score in float32 whatever
    ``trainer.precision`` trains in. Under ``bf16-mixed`` a logit keeps 8 bits of mantissa (a
    Census-Income MMoE scored 1,385 distinct values on 49,881 test rows, against 38,584 in float32),
    so AUC would rank ties and early stopping would compare rounded values; the forward pass alone
    costs little next to training. :class:`mtlrec.predict.RunScorer` scores in float32 too."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def parameter_groups(module: nn.Module, overrides: Mapping[int, Mapping[str, Any]] | None = None):
    """The module's parameters in optimizer groups. A submodule's ``optimizer_options`` (an image
    backbone's smaller learning rate) makes a group of its parameters; ``overrides`` (per-part
    learning rates, L2-SP's ``weight_decay=0``) are merged into a parameter's options and group the
    trained parameters by their options. Without overrides the groups are exactly those of
    earlier versions (so their checkpoints' optimizer states still load on resume)."""
    if overrides:
        return _grouped_by_options(module, overrides)
    groups, seen = [], set()
    for sub in module.modules():
        options = getattr(sub, "optimizer_options", None)
        if options:
            params = [p for p in sub.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, **options})
    if not groups:
        return module.parameters()
    return [{"params": [p for p in module.parameters() if id(p) not in seen]}, *groups]


def _grouped_by_options(module: nn.Module, overrides: Mapping[int, Mapping[str, Any]]) -> list[dict]:
    options: dict[int, dict[str, Any]] = {}
    for sub in module.modules():
        if getattr(sub, "optimizer_options", None):
            for param in sub.parameters():
                options.setdefault(id(param), dict(sub.optimizer_options))
    for key, value in overrides.items():
        options[key] = {**options.get(key, {}), **value}
    groups: dict[tuple, dict[str, Any]] = {}
    for param in module.parameters():
        if param.requires_grad:
            chosen = options.get(id(param), {})
            groups.setdefault(tuple(sorted(chosen.items())), {"params": [], **chosen})["params"].append(param)
    return sorted(groups.values(), key=lambda g: len(g) > 1)  # the plain group first


def _masked_loss(objective, logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """The task's mean loss over the rows of its sample space (its mask; all rows if none).

    A multiplicative mask, not ``logits[mask]``: boolean indexing waits for the device to count
    the rows every step. Rows outside the sample space get a placeholder label (theirs may be
    anything, NaN included) and a loss of exactly 0; a batch with none of the task's rows gives
    exactly 0 with the graph kept (the weightings read a 0 loss as "no rows this step")."""
    if mask is None:
        return objective.loss(logits, target)
    rows = mask.view(-1, *([1] * (target.dim() - 1)))
    per_row = objective.per_sample_loss(logits, torch.where(rows, target, torch.zeros_like(target)))
    return torch.where(mask, per_row, torch.zeros_like(per_row)).sum() / mask.sum().clamp_min(1)


def _in_sample_space(outputs: TaskOutputs, batch: Batch, task: str) -> tuple[Tensor, Tensor]:
    """The task's logits and labels on the rows of its sample space (its mask; all rows if none)."""
    logits, target = outputs.logits[task], batch.labels[task]
    mask = batch.masks.get(task)
    if mask is None:
        return logits, target
    return logits[mask], target[mask]
