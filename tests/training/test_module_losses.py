"""MultiTaskModule: per-task losses on each task's own sample space, objectives, and metrics
computed on the masked rows only (through a real Trainer.validate)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.schema import SchemaError, TaskSpec
from mtlrec.data.table import Batch
from mtlrec.models.base import Architecture, TaskOutputs
from mtlrec.models.inputs.encoder import InputEncoder
from mtlrec.models.inputs.numeric import NumericInput
from mtlrec.training.module import MultiTaskModule
from mtlrec.training.objectives import (
    BinaryObjective,
    MulticlassObjective,
    RegressionObjective,
    objective_for,
)
from mtlrec.weighting.fixed import FixedWeighting


class ColumnLogits(Architecture):
    """Logits read straight off the numeric columns (so metrics can be computed by hand)."""

    def __init__(self, schema, encoder):
        super().__init__(schema, encoder)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch: Batch) -> TaskOutputs:
        n = batch.features["numeric"] * self.scale
        return TaskOutputs(
            {
                "ctr": n[:, 0],
                "cvr": n[:, 1],
                "kind": torch.stack([n[:, 0], n[:, 1], -n[:, 0]], dim=1),
                "spend": n[:, 0] + 0.5,
            }
        )

    def task_specific_modules(self) -> list[nn.Module]:
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.scale]


def _module(schema, arch=None) -> MultiTaskModule:
    encoder = InputEncoder({"numeric": NumericInput(num_fields=2)})  # the tiny schema's age, income
    return MultiTaskModule(schema, arch or ColumnLogits(schema, encoder), FixedWeighting())


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _bce(logits: torch.Tensor, y: torch.Tensor) -> float:
    p = torch.sigmoid(logits.double())
    return float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean())


# -- losses ------------------------------------------------------------------------------------
def _hand_batch(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([True, False] * (n // 2))
    labels = {
        "ctr": (torch.rand(n, generator=g) > 0.5).float(),
        "cvr": (torch.rand(n, generator=g) > 0.5).float(),
        "kind": torch.randint(0, 3, (n,), generator=g),
        "spend": torch.randn(n, generator=g),
    }
    logits = {
        "ctr": torch.randn(n, generator=g),
        "cvr": torch.randn(n, generator=g),
        "kind": torch.randn(n, 3, generator=g),
        "spend": torch.randn(n, generator=g),
    }
    batch = Batch({}, labels, {"cvr": mask, "spend": mask.clone()}, n)
    return TaskOutputs(logits), batch, mask


def test_masked_loss_equals_hand_computation(tiny_schema) -> None:
    outputs, batch, mask = _hand_batch()
    losses = _module(tiny_schema).task_losses(outputs, batch)
    lg, y = outputs.logits, batch.labels
    assert set(losses) == {"ctr", "cvr", "kind", "spend"}
    assert losses["ctr"].item() == pytest.approx(_bce(lg["ctr"], y["ctr"]), rel=1e-5)
    assert losses["cvr"].item() == pytest.approx(_bce(lg["cvr"][mask], y["cvr"][mask]), rel=1e-5)
    assert losses["cvr"].item() != pytest.approx(_bce(lg["cvr"], y["cvr"]), rel=1e-3)
    kind = -torch.log_softmax(lg["kind"].double(), 1)[torch.arange(12), y["kind"]].mean()
    assert losses["kind"].item() == pytest.approx(float(kind), rel=1e-5)
    spend = float(((lg["spend"][mask] - y["spend"][mask]) ** 2).mean())
    assert losses["spend"].item() == pytest.approx(spend, rel=1e-5)


def test_rows_outside_the_mask_do_not_matter(tiny_schema) -> None:
    outputs, batch, mask = _hand_batch()
    module = _module(tiny_schema)
    before = module.task_losses(outputs, batch)
    for task in ("cvr", "spend"):
        outputs.logits[task][~mask] = 1e3
        batch.labels[task][~mask] = 1.0 if task == "cvr" else -1e3
    after = module.task_losses(outputs, batch)
    for task in ("cvr", "spend"):
        assert after[task].item() == pytest.approx(before[task].item(), rel=1e-6)


def test_all_masked_batch_gives_zero_loss_and_connected_graph(tiny_schema) -> None:
    outputs, batch, _ = _hand_batch()
    leaf = torch.randn(12, requires_grad=True)
    outputs.logits["spend"] = leaf * 2
    batch.masks["spend"] = torch.zeros(12, dtype=torch.bool)
    losses = _module(tiny_schema).task_losses(outputs, batch)
    assert losses["spend"].item() == 0.0
    assert losses["spend"].requires_grad
    losses["spend"].backward()
    assert torch.equal(leaf.grad, torch.zeros(12))


def test_objectives_match_torch_functionals() -> None:
    logits, y = torch.randn(6), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    binary = objective_for(TaskSpec("b", "binary", "y"))
    assert isinstance(binary, BinaryObjective) and binary.selection == ("auc", "max")
    torch.testing.assert_close(binary.loss(logits, y), F.binary_cross_entropy_with_logits(logits, y))
    multi = objective_for(TaskSpec("m", "multiclass", "y", num_classes=4))
    assert isinstance(multi, MulticlassObjective) and multi.selection == ("accuracy", "max")
    ml, my = torch.randn(6, 4), torch.tensor([0, 3, 1, 2, 2, 0])
    torch.testing.assert_close(multi.loss(ml, my), F.cross_entropy(ml, my))
    reg = objective_for(TaskSpec("r", "regression", "y"))
    assert isinstance(reg, RegressionObjective) and reg.selection == ("mse", "min")
    torch.testing.assert_close(reg.loss(logits, y), F.mse_loss(logits, y))
    # vector regression: one loss per sample (mean over the vector), then the batch mean
    vec = objective_for(TaskSpec("v", "regression", "y", output_dim=3))
    vl, vy = torch.randn(5, 3), torch.randn(5, 3)
    per = vec.per_sample_loss(vl, vy)
    assert tuple(per.shape) == (5,)
    torch.testing.assert_close(per, ((vl - vy) ** 2).mean(1))
    torch.testing.assert_close(vec.loss(vl, vy), F.mse_loss(vl, vy))


def test_selection_is_the_main_tasks_validation_metric(tiny_schema) -> None:
    assert _module(tiny_schema).selection == ("val/ctr/auc", "max")


# -- metrics on the masked sample space, through Trainer.validate -------------------------------
def test_validation_metrics_on_masked_sample_space(tiny_raw) -> None:
    dm = TabularDataModule(tiny_raw, batch_size=64, eval_batch_size=50, seed=0)  # 128 val rows -> 3 batches
    dm.setup()
    module = _module(tiny_raw.schema)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    got = trainer.validate(module, datamodule=dm, verbose=False)[0]
    val = dm.tables["val"]
    n, mask = val.features["numeric"].double(), val.masks["cvr"]
    assert torch.equal(mask, val.masks["spend"]) and 0 < int(mask.sum()) < len(val)
    y = val.labels
    expected = {
        "val/ctr/auc": _auc(n[:, 0].numpy(), y["ctr"].numpy()),
        "val/ctr/logloss": _bce(n[:, 0], y["ctr"].double()),
        "val/cvr/auc@click": _auc(n[mask, 1].numpy(), y["cvr"][mask].numpy()),
        "val/cvr/logloss@click": _bce(n[mask, 1], y["cvr"][mask].double()),
        "val/kind/accuracy": float(
            (torch.stack([n[:, 0], n[:, 1], -n[:, 0]], 1).argmax(1) == y["kind"]).double().mean()
        ),
        "val/kind/logloss": float(
            F.cross_entropy(torch.stack([n[:, 0], n[:, 1], -n[:, 0]], 1), y["kind"], reduction="mean")
        ),
        "val/spend/mse@click": float(((n[mask, 0] + 0.5 - y["spend"][mask].double()) ** 2).mean()),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the unmasked computation would have given something else
    on_every_row = float(((n[:, 0] + 0.5 - y["spend"].double()) ** 2).mean())
    assert got["val/spend/mse@click"] != pytest.approx(on_every_row, rel=1e-3)
    assert got["val/cvr/auc@click"] != pytest.approx(_auc(n[:, 1].numpy(), y["cvr"].numpy()), rel=1e-3)
    # metrics are reset after each epoch: a second validate gives the same numbers
    again = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert again == pytest.approx(got)
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert set(test) == {k.replace("val/", "test/") for k in expected}


@pytest.mark.filterwarnings("ignore:No positive samples")
def test_task_with_no_labelled_rows_is_left_out_of_metrics(tiny_raw) -> None:
    raw = tiny_raw
    unlabelled = raw.splits["val"].assign(click=0.0, buy=np.nan, spend=np.nan)
    dm = TabularDataModule(raw, batch_size=64, eval_batch_size=50, seed=0)
    dm.setup()
    # the datamodule refuses such a split (binary AUC undefined), so the module is handed it directly
    dm.tables["val"] = dm.preprocessor.transform(unlabelled, split="val")
    assert dm.tables["val"].labelled_counts()["cvr"] == dm.tables["val"].labelled_counts()["spend"] == 0
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    got = trainer.validate(_module(raw.schema), datamodule=dm, verbose=False)[0]
    assert not any(k.startswith(("val/cvr/", "val/spend/")) for k in got)
    assert "val/ctr/logloss" in got and not math.isnan(got["val/ctr/logloss"])
    raw.splits["val"] = unlabelled
    with pytest.raises(SchemaError, match=r"tiny/val: binary task 'ctr' has only label 0"):
        TabularDataModule(raw, batch_size=64, eval_batch_size=50, seed=0).setup()
