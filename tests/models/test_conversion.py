"""ESMM and AITM: the product of probabilities, the losses by hand, the calibrator, and metrics on
each task's own sample space, global over the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec
from mtlrec.data.table import Batch
from mtlrec.models.architectures.aitm import AITM, calibration
from mtlrec.models.architectures.esmm import ESMM
from mtlrec.models.blocks.probability import product_logit, ratio_logit
from mtlrec.models.inputs.encoder import build_encoder
from mtlrec.train import CONFIG_DIR
from mtlrec.training.module import MultiTaskModule
from mtlrec.weighting.fixed import FixedWeighting

WEIGHTINGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "weighting").glob("*.yaml"))

SCHEMA = Schema(
    features=(FeatureSpec("item", "categorical"), FeatureSpec("price", "numeric")),
    tasks=(
        TaskSpec("click", "binary", "click", sample_space="impressions"),
        TaskSpec("cvr", "binary", "buy", mask="click", sample_space="clicked"),
        TaskSpec("ctcvr", "binary", "ctcvr", sample_space="impressions"),
    ),
    main_task="ctcvr",
)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 20, n)
    click = (rng.random(n) < 0.2 + 0.03 * (item % 5)).astype(float)
    buy = np.where(click == 1, (rng.random(n) < 0.3).astype(float), 0.0)
    return pd.DataFrame({"item": item, "price": rng.normal(size=n), "click": click, "buy": buy, "ctcvr": click * buy})


@pytest.fixture(scope="module")
def data():
    pre = Preprocessor(SCHEMA).fit(_frame(400, 0))
    return pre, pre.transform(_frame(400, 0)), pre.transform(_frame(300, 1), split="val")


def _esmm(pre, seed=0):
    torch.manual_seed(seed)
    return ESMM(pre.fitted_schema, build_encoder(pre, embedding_dim=4), tower_units=(8,))


def _aitm(pre, seed=0, **kw):
    torch.manual_seed(seed)
    return AITM(pre.fitted_schema, build_encoder(pre, embedding_dim=4), tower_units=(8,),
                conditionals={"cvr": "ctcvr"}, **kw)


def _fixed(pre, model) -> MultiTaskModule:
    return MultiTaskModule(pre.fitted_schema, model, FixedWeighting())


def _bce(p, y):
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


@pytest.mark.parametrize("a,b", [(0.3, -1.2), (25.0, 30.0), (-40.0, 3.0), (-90.0, -90.0), (16.0, -16.0)])
def test_product_logit_is_the_product_of_probabilities_in_logit_space(a, b) -> None:
    x = torch.tensor([a], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([b], dtype=torch.float64)
    logit = product_logit(x, y)
    expected = torch.sigmoid(x) * torch.sigmoid(y)
    assert torch.allclose(torch.sigmoid(logit), expected, rtol=1e-6, atol=1e-300)
    if max(a, b) > -5:  # (for two tiny probabilities the product's logit is the sum of logits)
        assert not torch.allclose(logit, x + y)  # not a product of logits
    logit.sum().backward()
    assert torch.isfinite(x.grad).all()
    q = ratio_logit(torch.tensor([b], dtype=torch.float64), x.detach())
    assert torch.isfinite(q).all() and float(torch.sigmoid(q)) <= 1.0


def test_esmm_pctcvr_is_pctr_times_pcvr_and_its_loss_is_the_hand_computed_one(data) -> None:
    pre, train, _ = data
    model = _esmm(pre)
    module = _fixed(pre, model)
    batch = train[torch.arange(64)]
    out = model(batch)
    p_ctr, p_cvr = torch.sigmoid(out.logits["click"]), torch.sigmoid(out.logits["cvr"])
    assert torch.allclose(torch.sigmoid(out.logits["ctcvr"]), p_ctr * p_cvr, rtol=1e-5)
    losses = module.task_losses(out, batch)
    assert set(losses) == {"click", "ctcvr"}  # pCVR is never trained directly
    click, buy = batch.labels["click"], batch.labels["cvr"]  # buy is 0 outside the clicked rows
    assert torch.allclose(losses["click"], _bce(p_ctr, click), atol=1e-6)
    assert torch.allclose(losses["ctcvr"], _bce(p_ctr * p_cvr, click * buy), atol=1e-6)
    # a batch without any click: both losses are still over every impression, and finite
    no_click = (batch.labels["click"] == 0).nonzero().squeeze(1)[:16]
    quiet = train[no_click]
    out = model(quiet)
    losses = module.task_losses(out, quiet)
    p_ctr, p_cvr = torch.sigmoid(out.logits["click"]), torch.sigmoid(out.logits["cvr"])
    assert float(quiet.labels["click"].sum()) == 0
    assert torch.allclose(losses["ctcvr"], _bce(p_ctr * p_cvr, torch.zeros(16)), atol=1e-6)
    assert torch.allclose(losses["click"], _bce(p_ctr, torch.zeros(16)), atol=1e-6)


def test_esmm_trains_the_cvr_tower_only_through_pctcvr(data) -> None:
    pre, train, _ = data
    model = _esmm(pre)
    module = _fixed(pre, model)
    batch = train[torch.arange(64)]
    module.task_losses(model(batch), batch)["click"].backward()
    assert all(p.grad is None for p in model.towers["cvr"].parameters())
    model.zero_grad()
    module.task_losses(model(batch), batch)["ctcvr"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.towers["cvr"].parameters())


def test_esmm_refuses_a_cvr_task_that_is_not_masked_to_clicks(data) -> None:
    pre, _, _ = data
    schema = Schema(SCHEMA.features, (SCHEMA.tasks[0], TaskSpec("cvr", "binary", "buy"), SCHEMA.tasks[2]), "ctcvr")
    with pytest.raises(SchemaError, match="mask: click"):
        ESMM(schema, build_encoder(pre, embedding_dim=4))
    with pytest.raises(SchemaError, match="arch.ctcvr='conversion'"):
        ESMM(SCHEMA, build_encoder(pre, embedding_dim=4), ctcvr="conversion")


def test_calibrator_is_alpha_times_the_batch_mean_of_the_positive_gaps() -> None:
    earlier, later = torch.tensor([0.5, 0.2, 0.9, 0.1]), torch.tensor([0.3, 0.4, 0.9, 0.5])
    expected = 0.6 * (0.0 + 0.2 + 0.0 + 0.4) / 4
    assert torch.allclose(calibration([earlier, later], 0.6), torch.tensor(expected))
    # a mean, not a sum: the same rows twice give the same term
    assert torch.allclose(calibration([earlier.repeat(2), later.repeat(2)], 0.6), torch.tensor(expected))
    assert float(calibration([later + 1, later], 0.6)) == 0.0  # later step never likelier: no penalty


def test_aitm_adds_its_calibrator_to_the_later_task_and_derives_pcvr(data) -> None:
    pre, train, _ = data
    model = _aitm(pre)
    module = _fixed(pre, model)
    batch = train[torch.arange(64)]
    out = model(batch)
    p_click, p_ctcvr = torch.sigmoid(out.logits["click"]), torch.sigmoid(out.logits["ctcvr"])
    term = out.auxiliary["ctcvr"]["calibration"]
    assert torch.allclose(term, 0.6 * F.relu(p_ctcvr - p_click).mean())
    losses = module.task_losses(out, batch)
    assert set(losses) == {"click", "ctcvr"}
    bce = F.binary_cross_entropy_with_logits(out.logits["ctcvr"], batch.labels["ctcvr"])
    assert torch.allclose(losses["ctcvr"], bce + term)
    assert torch.allclose(torch.sigmoid(out.logits["cvr"]), torch.clamp(p_ctcvr / p_click, max=1.0), atol=1e-5)
    with torch.no_grad():  # the conversion step far less likely than the click: the term is exactly 0
        model.heads["ctcvr"].bias.fill_(-30.0)
    assert float(model(batch).auxiliary["ctcvr"]["calibration"]) == 0.0
    assert "calibration" not in str(_aitm(pre, calibration_weight=0.0)(batch).auxiliary)


def test_aitm_with_a_chain_of_three(data) -> None:
    pre, train, _ = data
    schema = Schema(SCHEMA.features, (*SCHEMA.tasks, TaskSpec("deep", "binary", "ctcvr")), "ctcvr")
    model = AITM(schema, build_encoder(pre, embedding_dim=4), chain=["click", "ctcvr", "deep"], tower_units=(8,),
                 conditionals={"cvr": "ctcvr"})
    out = model(train[torch.arange(8)])
    assert set(out.auxiliary) == {"ctcvr", "deep"} and set(out.logits) == {"click", "cvr", "ctcvr", "deep"}


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann–Whitney by hand: the share of (positive, negative) pairs ordered right (ties half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def test_cvr_auc_is_on_clicked_rows_and_every_auc_is_global_over_the_split(data) -> None:
    pre, _, val = data
    model = _esmm(pre, seed=3)
    module = _fixed(pre, model)
    logged = {}
    module.log_dict = lambda values, **kw: logged.update({k: float(v) for k, v in values.items()})
    batches = [slice(i, i + 50) for i in range(0, len(val), 50)]
    with torch.no_grad():
        for s in batches:
            module.validation_step(val[s], 0)
        module.on_validation_epoch_end()
        out = model(val[slice(0, len(val))])
    assert {"val/click/auc@impressions", "val/cvr/auc@clicked", "val/ctcvr/auc@impressions"} <= set(logged)
    clicked = val.masks["cvr"].numpy()
    p_cvr = torch.sigmoid(out.logits["cvr"]).numpy()
    on_clicked = _auc(p_cvr[clicked], val.labels["cvr"].numpy()[clicked])
    assert logged["val/cvr/auc@clicked"] == pytest.approx(on_clicked, abs=1e-5)
    assert on_clicked != pytest.approx(_auc(p_cvr, val.labels["ctcvr"].numpy()), abs=1e-3)  # not on impressions
    p_ctcvr, y = torch.sigmoid(out.logits["ctcvr"]).numpy(), val.labels["ctcvr"].numpy()
    assert logged["val/ctcvr/auc@impressions"] == pytest.approx(_auc(p_ctcvr, y), abs=1e-5)
    per_batch = [_auc(p_ctcvr[s], y[s]) for s in batches if 0 < y[s].sum() < len(y[s])]
    assert logged["val/ctcvr/auc@impressions"] != pytest.approx(float(np.mean(per_batch)), abs=1e-4)


@pytest.mark.parametrize("arch", ["esmm", "aitm"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_every_weighting_trains_esmm_and_aitm(data, arch, weighting) -> None:
    pre, train, _ = data
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"weighting={weighting}"])
    model = _esmm(pre) if arch == "esmm" else _aitm(pre)
    module = MultiTaskModule(pre.fitted_schema, model, instantiate(cfg.weighting, _convert_="all"))
    assert module.weighting.task_names == ["click", "ctcvr"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(3):
        batch: Batch = train[torch.arange(step * 64, (step + 1) * 64)]
        losses = module.task_losses(model(batch), batch)
        optimizer.zero_grad()
        module.weighting.backward(losses, lambda loss, **kw: loss.backward(**kw), features=None)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
