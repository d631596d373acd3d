"""Per task kind: the loss on logits, the metrics, and the metric used for model selection.

Losses always take logits (BCE-with-logits, cross-entropy, MSE): numerically stable and cheaper
than losses on probabilities. Metrics are torchmetrics objects updated only on the task's own
sample space (rows where its mask is 1).
"""

from __future__ import annotations

import warnings
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


class TagCounts(Metric):
    """Per tag, how many rows are positive, and how many rows there are (summed over batches and
    processes), so a tag whose AUC is undefined in a split (no positive, or no negative) is known."""

    full_state_update = False

    def __init__(self, num_tags: int):
        super().__init__()
        self.add_state("positives", torch.zeros(num_tags), dist_reduce_fx="sum")
        self.add_state("rows", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, target: Tensor) -> None:
        self.positives += target.sum(dim=0)
        self.rows += target.shape[0]

    def compute(self) -> Tensor:
        """True where the tag has both positives and negatives."""
        return (self.positives > 0) & (self.positives < self.rows)


class MultilabelObjective(Objective):
    """One sigmoid per tag: BCE with logits averaged over tags, AUC per tag and pooled.

    ``auc_macro`` (the mean of per-tag AUCs, each tag counting equally) selects the model, since
    frequent tags would otherwise dominate; ``auc_micro`` pools every (row, tag) pair, and
    ``auc/<tag>`` gives each tag's own AUC. A tag without positives (or without negatives) in a
    split has no AUC there: it is left out of ``auc/<tag>`` and of the macro mean, instead of the
    0 that torchmetrics returns for it (which would drag the mean down).
    """

    selection = ("auc_macro", "max")

    def predict(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def per_sample_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=-1)

    def metrics(self) -> dict[str, Metric]:
        n = self.task.num_classes
        return {
            "auc_micro": MultilabelAUROC(n, average="micro"),
            "auc_per_tag": MultilabelAUROC(n, average="none"),
            "tag_counts": TagCounts(n),
            "logloss": MeanMetric(),
        }

    def update(self, metrics, logits, target) -> None:
        probs, labels = torch.sigmoid(logits), target.long()
        metrics["auc_micro"].update(probs, labels)
        metrics["auc_per_tag"].update(probs, labels)
        metrics["tag_counts"].update(target)
        metrics["logloss"].update(self.per_sample_loss(logits, target))

    def compute(self, metrics) -> dict[str, Tensor]:
        if not metrics["logloss"].update_count:
            return {}
        defined = metrics["tag_counts"].compute()
        with warnings.catch_warnings():  # its "no positive samples" warning is handled here
            warnings.simplefilter("ignore", UserWarning)
            per_tag = metrics["auc_per_tag"].compute()
            values = {"auc_micro": metrics["auc_micro"].compute(), "logloss": metrics["logloss"].compute()}
        values["auc_macro"] = per_tag[defined].mean() if bool(defined.any()) else torch.tensor(float("nan"))
        values.update({f"auc/{tag}": per_tag[j] for j, tag in enumerate(self.task.classes) if defined[j]})
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
