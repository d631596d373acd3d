"""Per task kind: the loss on logits, the metrics, and the metric used for model selection.

Losses always take logits (BCE-with-logits, cross-entropy, MSE): numerically stable and cheaper
than losses on probabilities. Metrics are torchmetrics objects updated only on the task's own
sample space (rows where its mask is 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MultilabelAUROC

from mtlrec.data.schema import TaskSpec


class Objective(ABC):
    """Loss + metrics of one task. ``selection`` = (metric, "max"|"min") for checkpointing."""

    selection: tuple[str, str]

    def __init__(self, task: TaskSpec):
        self.task = task

    @abstractmethod
    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor: ...

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.per_sample_loss(logits, target).mean()

    @abstractmethod
    def metrics(self) -> dict[str, Metric]: ...

    def predict(self, logits: Tensor) -> Tensor:
        """What a user scores with: probabilities for classification, values for regression."""
        return logits

    @abstractmethod
    def update(self, metrics: dict[str, Metric], logits: Tensor, target: Tensor) -> None: ...

    def compute(self, metrics: dict[str, Metric]) -> dict[str, Tensor]:
        """Metric name -> scalar, for the metrics that saw at least one batch."""
        return {name: m.compute() for name, m in metrics.items() if m.update_count}


class BinaryObjective(Objective):
    selection = ("auc", "max")

    def predict(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def metrics(self) -> dict[str, Metric]:
        return {"auc": BinaryAUROC(), "logloss": MeanMetric()}

    def update(self, metrics, logits, target) -> None:
        metrics["auc"].update(torch.sigmoid(logits), target.long())
        metrics["logloss"].update(self.per_sample_loss(logits, target))


class MulticlassObjective(Objective):
    selection = ("accuracy", "max")

    def predict(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=-1)

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target, reduction="none")

    def metrics(self) -> dict[str, Metric]:
        return {"accuracy": MulticlassAccuracy(self.task.num_classes, average="micro"), "logloss": MeanMetric()}

    def update(self, metrics, logits, target) -> None:
        metrics["accuracy"].update(logits, target)
        metrics["logloss"].update(self.per_sample_loss(logits, target))


class MultilabelObjective(Objective):
    """One sigmoid per tag: BCE with logits averaged over tags, AUC per tag and pooled.

    ``auc_macro`` (the mean of per-tag AUCs, each tag counting equally) selects the model, since
    frequent tags would otherwise dominate; ``auc_micro`` pools every (row, tag) pair, and
    ``auc/<tag>`` gives each tag's own AUC.
    """

    selection = ("auc_macro", "max")

    def predict(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=-1)

    def metrics(self) -> dict[str, Metric]:
        n = self.task.num_classes
        return {
            "auc_macro": MultilabelAUROC(n, average="macro"),
            "auc_micro": MultilabelAUROC(n, average="micro"),
            "auc_per_tag": MultilabelAUROC(n, average="none"),
            "logloss": MeanMetric(),
        }

    def update(self, metrics, logits, target) -> None:
        probs, labels = torch.sigmoid(logits), target.long()
        for name in ("auc_macro", "auc_micro", "auc_per_tag"):
            metrics[name].update(probs, labels)
        metrics["logloss"].update(self.per_sample_loss(logits, target))

    def compute(self, metrics) -> dict[str, Tensor]:
        values = super().compute(metrics)
        per_tag = values.pop("auc_per_tag", None)
        if per_tag is not None:
            values.update({f"auc/{tag}": v for tag, v in zip(self.task.classes, per_tag)})
        return values


class RegressionObjective(Objective):
    selection = ("mse", "min")

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        err = F.mse_loss(logits, target, reduction="none")
        return err if err.dim() == 1 else err.mean(dim=tuple(range(1, err.dim())))

    def metrics(self) -> dict[str, Metric]:
        return {"mse": MeanSquaredError()}

    def update(self, metrics, logits, target) -> None:
        metrics["mse"].update(logits, target)


OBJECTIVES: dict[str, type[Objective]] = {
    "binary": BinaryObjective,
    "multiclass": MulticlassObjective,
    "multilabel": MultilabelObjective,
    "regression": RegressionObjective,
}


def objective_for(task: TaskSpec) -> Objective:
    return OBJECTIVES[task.kind](task)
