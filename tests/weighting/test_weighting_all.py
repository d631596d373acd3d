"""Every shipped weighting config, on a tiny shared-trunk model: instantiates through Hydra,
gives finite gradients, calls backward_fn exactly once, and *adds* to existing ``.grad``."""

import copy
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from weighting_helpers import TASKS, CountingBackward, TinyMTL, grads_of, make_batch

from mtlrec.weighting.base import Weighting

CONF = Path(__file__).resolve().parents[2] / "conf" / "weighting"
NAMES = ["fixed", "data_volume", "uncertainty", "gradnorm", "dwa", "pcgrad", "mgda", "cagrad", "upgrad", "nashmtl"]
KINDS = {"a": "regression", "b": "binary"}


def test_every_config_is_shipped():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(NAMES)


def _build(name):
    model = TinyMTL()
    w = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(w, Weighting)
    w.setup(TASKS, model.shared_model(), {"a": 30, "b": 10}, task_kinds=KINDS)
    w.double()
    return model, w


@pytest.mark.parametrize("name", NAMES)
def test_finite_grads_and_accumulation(name):
    x, ys = make_batch()
    model_a, w_a = _build(name)
    model_b, w_b = copy.deepcopy((model_a, w_a))

    bw = CountingBackward()
    w_a.backward(model_a.losses(x, ys), bw)
    assert bw.calls == 1
    fresh = grads_of(model_a)
    for n, g in fresh.items():
        assert torch.isfinite(g).all(), n
    assert any(g.abs().sum() > 0 for g in fresh.values())
    weights = w_a.weights()
    assert set(weights) == set(TASKS) and all(math.isfinite(v) for v in weights.values())

    gen = torch.Generator().manual_seed(5)
    pre = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in model_b.named_parameters()}
    for n, p in model_b.named_parameters():
        p.grad = pre[n].clone()
    w_b.backward(model_b.losses(x, ys), CountingBackward())
    for n, g in grads_of(model_b).items():
        torch.testing.assert_close(g, pre[n] + fresh[n], msg=f"{name}: {n} did not accumulate")
    assert w_b.weights() == pytest.approx(weights)

    # a second step and an epoch end run too
    for p in model_a.parameters():
        p.grad = None
    w_a.on_train_epoch_end({"a": 1.0, "b": 2.0})
    w_a.backward(model_a.losses(x, ys), CountingBackward())
    assert all(torch.isfinite(g).all() for g in grads_of(model_a).values())


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm"])
def test_learned_weights_live_outside_the_model_optimizer(name):
    """The weighting's parameters get no gradient from the model's backward and are stepped by
    the weighting's own optimizer."""
    x, ys = make_batch()
    model, w = _build(name)
    before = [p.detach().clone() for p in w.parameters()]
    assert before, "a learned weighting has parameters"
    seen = []

    def backward_fn(loss, **kwargs):
        loss.backward(**kwargs)
        seen.extend(p.grad is None for p in w.parameters())

    w.backward(model.losses(x, ys), backward_fn)
    assert all(seen)  # model backward left the weighting's parameters alone
    assert any(not torch.equal(b, p) for b, p in zip(before, w.parameters()))


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "mgda", "upgrad", "nashmtl"])
def test_all_masked_task_zero_loss(name):
    """The training module gives a task with no labelled rows in the batch a loss of 0·logits.
    Such a task must not distort the others: no L_i(0) = 0 (GradNorm), no drift of s
    (uncertainty), no zeroed shared direction (MGDA); gradients stay finite."""
    x, ys = make_batch()
    model, w = _build(name)
    state0 = {k: v.clone() for k, v in w.state_dict().items() if isinstance(v, torch.Tensor)}
    losses = model.losses(x, ys)
    losses["b"] = losses["b"] * 0.0
    w.backward(losses, CountingBackward())
    grads = grads_of(model)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads["trunk.0.weight"].abs().sum() > 0  # task a still trains the trunk
    if name == "uncertainty":
        s = w.log_variances()
        assert s["b"] == pytest.approx(float(state0["log_vars"][1]))  # untouched
        assert s["a"] != pytest.approx(float(state0["log_vars"][0]))
    if name == "gradnorm":
        assert torch.isnan(w.initial_losses[1]) and torch.isfinite(w.initial_losses[0])
        # a lone valid task is its own target: no update, weights stay 1
        assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0})
    if name in ("mgda", "upgrad"):
        assert set(w.weights()) == set(TASKS)
        assert w.weights()["b"] == 0.0  # no row this step
        assert w.weights()["a"] > 0
