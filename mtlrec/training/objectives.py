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
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

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
    "regression": RegressionObjective,
}


def objective_for(task: TaskSpec) -> Objective:
    return OBJECTIVES[task.kind](task)
