"""Domain adaptation: the gradient-reversal layer flips the sign of the domain loss's gradient on
the shared representation and leaves the task losses and the towers' gradients as they were;
CORAL equals its formula; unlabelled target rows enter no task loss, no metric and no label fitting;
``data.domain`` keeps the rows each mode promises and refuses what cannot work, in one line."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtlrec.data.schema import SchemaError
from mtlrec.transfer.adaptation import CORAL, DANN
from tests.conftest import build_in_process as _build
from tests.conftest import train_in_process


def test_the_reversal_flips_the_domain_gradient_and_changes_nothing_forward() -> None:
    torch.manual_seed(0)
    features = torch.randn(16, 4, requires_grad=True)
    domain = torch.tensor([0.0, 1.0] * 8)
    dann = DANN(4, hidden=[8], weight=0.7, schedule="constant")
    loss = dann(features, domain)
    (reversed_grad,) = torch.autograd.grad(loss, features)
    plain = F.binary_cross_entropy_with_logits(dann.head(dann.body(features)).squeeze(-1), domain)
    (plain_grad,) = torch.autograd.grad(plain, features, retain_graph=True)
    assert torch.allclose(loss, plain)  # the reversal is the identity forward
    assert torch.allclose(reversed_grad, -0.7 * plain_grad) and plain_grad.abs().sum() > 0
    # the classifier itself descends its loss: its gradients are not reversed
    got = torch.autograd.grad(dann(features, domain), list(dann.parameters()))
    want = torch.autograd.grad(plain, list(dann.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(got, want))


def test_the_ganin_schedule_rises_from_zero_to_the_weight() -> None:
    dann = DANN(4, weight=0.5)
    assert dann.reversal_scale(0.0) == 0.0
    assert dann.reversal_scale(0.5) == pytest.approx(0.5 * (2 / (1 + np.exp(-5)) - 1))
    assert dann.reversal_scale(1.0) == pytest.approx(0.5, abs=1e-4)


def test_coral_equals_the_distance_of_the_two_covariances() -> None:
    torch.manual_seed(1)
    x = torch.randn(20, 3)
    domain = (torch.arange(20) % 3 == 0).float()
    source, target = x[domain == 0], x[domain == 1]
    expected = 2.0 * ((torch.cov(source.T) - torch.cov(target.T)) ** 2).sum() / (4 * 9)
    assert torch.allclose(CORAL(3, weight=2.0)(x, domain), expected)
    one_target = torch.zeros(20)
    one_target[0] = 1
    assert CORAL(3)(x, one_target) == 0  # a single target row has no covariance


# -- data.domain, through the real build ---------------------------------------------------------
def _shop(folder, n: int = 900) -> list[str]:
    """Three regions; 'south' is the target. Its prices are shifted (a covariate shift)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    region = rng.choice(["north", "east", "south"], n)
    price = rng.normal(size=n) + 2.0 * (region == "south")
    click = (price + rng.normal(size=n) > 0.5).astype(int)
    tags = np.where(click == 1, "a", "b")
    tags = np.where(region == "south", np.char.add(tags, "|rare"), tags)  # 'rare': a tag of target rows only
    pd.DataFrame({"region": region, "price": price, "click": click, "tags": tags}).to_csv(folder / "shop.csv",
                                                                                        index=False)
    return ["data=tabular", f"data.root={folder}", "data.files=shop.csv", "data.features={numeric: [price]}",
            "data.tasks=[{name: click, kind: binary}, {name: tags, kind: multilabel, label: tags, separator: '|'}]",
            "data.main_task=click", "arch=shared_bottom", "trainer.max_epochs=1", "console.progress_bar=false"]


def test_each_rows_mode_keeps_the_rows_it_promises(tmp_path) -> None:
    base = _shop(tmp_path)
    whole = pd.read_csv(tmp_path / "shop.csv")
    _, everything = _build(base)
    sizes = {s: len(t) for s, t in everything.tables.items()}
    for rows, train_regions, eval_regions in (("source", {"north", "east"}, {"north", "east"}),
                                              ("target", {"south"}, {"south"}),
                                              ("both", {"north", "east", "south"}, {"south"})):
        _, dm = _build([*base, f"data.domain={{column: region, target: [south], rows: {rows}}}"])
        for split, frame in dm.raw.splits.items():
            regions = train_regions if split == "train" else eval_regions
            assert set(frame["region"]) == regions, (rows, split)
            assert torch.equal(dm.tables[split].domain, torch.tensor((frame["region"] == "south").to_numpy(),
                                                                     dtype=torch.float32))
            # the split is made over all rows first: a row's split does not depend on the domain, so
            # each split is the no-domain split's rows of its regions, in their order
            undivided = everything.raw.splits[split]
            expected = undivided[undivided["region"].isin(regions)].reset_index(drop=True)
            pd.testing.assert_frame_equal(frame[list(expected.columns)].reset_index(drop=True), expected)
    assert "region" not in [f.name for f in everything.schema.features]
    assert len(whole) == sum(sizes.values())


def test_unlabelled_target_rows_enter_no_task_loss_metric_or_label_fitting(tmp_path) -> None:
    overrides = [*_shop(tmp_path), "data.domain={column: region, target: [south], rows: both, labelled: 7}"]
    module, dm = _build(overrides)
    train, frame = dm.tables["train"], dm.raw.splits["train"]
    target = train.domain == 1
    for task in ("click", "tags"):
        assert train.masks[task][~target].all() and int(train.masks[task][target].sum()) == 7
    # 'rare' is the tag of every target row: only the 7 labelled ones may have been seen in fitting
    assert "rare" in module.schema.task("tags").classes
    _, none_labelled = _build([*overrides[:-1], "data.domain={column: region, target: [south], rows: both, "
                                               "labelled: 0}"])
    assert "rare" not in none_labelled.schema.task("tags").classes
    # the losses of a batch do not move when the unlabelled rows' labels change
    batch = train[torch.arange(len(train))]
    losses = module.task_losses(module(batch), batch)
    unlabelled = ~train.masks["click"]
    batch.labels["click"] = torch.where(unlabelled, 1.0 - batch.labels["click"], batch.labels["click"])
    again = module.task_losses(module(batch), batch)
    assert torch.equal(losses["click"], again["click"]) and unlabelled.sum() > 100
    # validation and test hold target rows only, all labelled: metrics see no unlabelled row
    assert all(not dm.tables[s].masks and bool((dm.tables[s].domain == 1).all()) for s in ("val", "test"))
    # every target training row stays in the batches, labelled or not
    _, undivided = _build(overrides[:-1])
    assert int(target.sum()) == int((undivided.raw.splits["train"]["region"] == "south").sum()) > 100
    assert len(frame) == len(undivided.raw.splits["train"])


class _Gradients(L.Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self.grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _one_step_gradients(module, dm) -> dict[str, torch.Tensor]:
    capture = _Gradients()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[capture])
    trainer.fit(module, datamodule=dm)
    return capture.grads


def test_a_training_step_adds_the_reversed_domain_gradient_below_and_nothing_to_the_towers(tmp_path) -> None:
    overrides = [*_shop(tmp_path), "data.domain={column: region, target: [south], rows: both, labelled: 20}",
                 "data.loader.batch_size=4096"]  # one batch: the whole training split
    plain, dm = _build(overrides)
    adapted, dm2 = _build([*overrides, "adapt=dann", "adapt.schedule=constant", "adapt.weight=0.5"])
    assert all(torch.equal(a, b) for a, b in zip(plain.architecture.state_dict().values(),
                                                 adapted.architecture.state_dict().values()))
    before = copy.deepcopy(adapted)
    without, with_dann = _one_step_gradients(plain, dm), _one_step_gradients(adapted, dm2)
    for name, grad in without.items():
        if ".towers." in name:
            assert torch.allclose(with_dann[name], grad), name
    # below the shared representation: the task gradient minus 0.5 x the domain loss's gradient
    batch = dm2.tables["train"][torch.arange(len(dm2.tables["train"]))]
    shared = before.architecture(batch).shared
    dann = before.adaptation
    domain_loss = F.binary_cross_entropy_with_logits(dann.head(dann.body(shared)).squeeze(-1), batch.domain)
    bottom = {n: p for n, p in before.named_parameters() if n.startswith("architecture.bottom.")}
    grads = dict(zip(bottom, torch.autograd.grad(domain_loss, list(bottom.values()))))
    for name, grad in grads.items():
        assert torch.allclose(with_dann[name], without[name] - 0.5 * grad, atol=1e-6), name
        assert grad.abs().sum() > 0
    assert any(n.startswith("adaptation.") for n in with_dann)  # the classifier is trained too
    assert shared.shape[1] == dann.feature_dim


def test_the_ganin_schedule_follows_the_training_progress_of_the_fit(tmp_path) -> None:
    """λ_p's p is the optimizer step over the fit's total steps (max_epochs × batches per epoch)."""
    overrides = [*_shop(tmp_path), "data.domain={column: region, target: [south], rows: both}", "adapt=dann",
                 "data.loader.batch_size=128", "trainer.max_epochs=3"]
    module, dm = _build(overrides)
    seen: list[float] = []
    forward = module.adaptation.forward
    module.adaptation.forward = lambda f, d, progress=1.0: (seen.append(progress), forward(f, d, progress))[1]
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    per_epoch = -(-len(dm.tables["train"]) // 128)
    assert per_epoch >= 3 and len(seen) == 3 * per_epoch
    assert seen == pytest.approx([step / (3 * per_epoch) for step in range(3 * per_epoch)])


def test_a_run_with_dann_trains_and_logs_the_adaptation_loss(tmp_path) -> None:
    overrides = [*_shop(tmp_path / "data"), "data.domain={column: region, target: [south], rows: both, labelled: 20}",
                 "adapt=dann"]
    record, _ = train_in_process(tmp_path / "run", overrides)
    assert record["status"] == "complete"
    logged = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert logged["train/adapt/loss"].notna().any()


@pytest.mark.parametrize("domain, adapt, message", [
    ("{column: region, target: [south], rows: target}", "dann", "needs training rows of both domains"),
    (None, "coral", "needs training rows of both domains"),
    ("{column: regoin, target: [south]}", "none", "data.domain.column: column 'regoin' is not in"),
    ("{column: region, target: [west]}", "none", r"data.domain.target: \['west'\] occur in no row of column "
                                                 r"'region'; its values are \['east', 'north', 'south'\]"),
    ("{column: region, target: [south], source: [north, esat], rows: both}", "none",
     r"data.domain.source: \['esat'\] occur in no row"),
    ("{column: region, target: [south], rows: all}", "none", "rows='all': use one of source, target, both"),
    ("{column: region, target: [south], labelled: 100000}", "none", "the target has only"),
    ("{column: region, target: [south], source: [south]}", "none", "is both source and target"),
    ("{column: region, target: [north, east, south], rows: both}", "none", "rows=both but the training split has "
                                                                         "no source row"),
])
def test_what_cannot_work_is_refused_in_one_line(tmp_path, domain, adapt, message) -> None:
    overrides = [*_shop(tmp_path), f"adapt={adapt}", *([f"data.domain={domain}"] if domain else [])]
    with pytest.raises((ValueError, SchemaError), match=message) as err:
        _build(overrides)
    assert "\n" not in str(err.value)


def test_single_task_networks_have_no_shared_representation_to_adapt(tmp_path) -> None:
    overrides = [*_shop(tmp_path), "arch=single_task", "adapt=dann",
                 "data.domain={column: region, target: [south], rows: both}"]
    with pytest.raises(ValueError, match="its own network"):
        _build(overrides)


def test_fp16_loss_scaling_is_refused_for_gradients_added_outside_the_backward(tmp_path) -> None:
    # On CPU Lightning turns 16-mixed into bf16-mixed (no scaler, nothing to refuse), so the
    # refusal a GPU run meets is checked on the module itself.
    from mtlrec.transfer.l2sp import L2SP

    module, _ = _build([*_shop(tmp_path), "data.domain={column: region, target: [south], rows: both}",
                        "adapt=coral"])
    module.check_trainer("bf16-mixed", 1)
    module.check_trainer("32-true", 1)
    with pytest.raises(ValueError, match=r"trainer.precision=16-mixed: adapt add their .* trainer.precision=32"):
        module.check_trainer("16-mixed", 1)
    module.adaptation = None
    module.check_trainer("16-mixed", 1)  # nothing outside the backward: the scaler sees everything
    module.l2sp = L2SP(module.architecture, {"loaded": []}, alpha=0.1, beta=0.1)
    with pytest.raises(ValueError, match=r"trainer.precision=16: finetune.l2sp add their"):
        module.check_trainer("16", 1)


def test_two_processes_are_refused_in_one_line(tmp_path) -> None:
    from mtlrec.train import BadInputError

    overrides = [*_shop(tmp_path / "data"), "data.domain={column: region, target: [south], rows: both}", "adapt=coral",
                 "trainer.accelerator=cpu", "trainer.devices=2"]
    with pytest.raises(BadInputError, match="adapt: the adaptation gradient is added outside") as err:
        train_in_process(tmp_path / "run", overrides)
    assert "\n" not in str(err.value) and not (tmp_path / "run" / "results.json").exists()
