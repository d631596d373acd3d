import math

import pytest
import torch
from torch import nn
from weighting_helpers import (
    TASKS,
    CountingBackward,
    TinyMTL,
    grads_of,
    make_batch,
    one_thread,
    reference_grads,
)

from mtlrec.weighting.base import SharedModel
from mtlrec.weighting.uncertainty import UncertaintyWeighting


def test_converges_to_the_noise_variances():
    """y_k = β_kᵀx + noise_k with Var(noise) = (0.1, 4.0). With the regression form
    ½e^{−s}·MSE + ½s the optimum in s is e^{s} = MSE → σ_k² once the means are fitted."""
    torch.manual_seed(0)
    n, d = 4000, 5
    sig2 = {"low": 0.1, "high": 4.0}
    x = torch.randn(n, d)
    ys = {t: x @ torch.randn(d) + math.sqrt(v) * torch.randn(n) for t, v in sig2.items()}
    trunk = nn.Linear(d, 8)
    heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in sig2})
    shared = SharedModel(list(trunk.parameters()), [trunk.weight], [p for t in sig2 for p in heads[t].parameters()])
    w = UncertaintyWeighting(lr=0.05)
    w.setup(list(sig2), shared, {}, task_kinds={t: "regression" for t in sig2})
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=0.05)
    with one_thread():
        for _ in range(600):
            h = trunk(x)
            losses = {t: ((heads[t](h).squeeze(-1) - ys[t]) ** 2).mean() for t in sig2}
            opt.zero_grad()
            w.backward(losses, lambda loss, **kw: loss.backward(**kw))
            opt.step()
    var = {t: math.exp(s) for t, s in w.log_variances().items()}
    mse = {t: float(v.detach()) for t, v in losses.items()}
    # e^{s} sits at the optimum (the current MSE) ...
    assert var == pytest.approx(mse, rel=0.02)
    # ... which is the noise variance: within 10% (the sample variance of 4000 draws has a
    # relative std of sqrt(2/4000) ≈ 2.2%, so 10% is ~4.5 standard errors).
    assert var["low"] == pytest.approx(0.1, rel=0.10)
    assert var["high"] == pytest.approx(4.0, rel=0.10)
    # the multipliers are ½e^{−s}: the low-noise task weighs ~40x more
    wts = w.weights()
    assert wts["low"] == pytest.approx(0.5 / var["low"], rel=1e-6)
    assert wts["low"] / wts["high"] == pytest.approx(40.0, rel=0.2)


def test_one_step_matches_hand_gradient():
    model, (x, ys) = TinyMTL(), make_batch()
    lr = 0.1
    w = UncertaintyWeighting(optimizer=lambda p: torch.optim.SGD(p, lr=lr), init_log_var=0.3)
    w.setup(TASKS, model.shared_model(), {}, task_kinds={"a": "regression", "b": "binary"})
    w.double()
    s0 = w.log_variances()["a"]  # 0.3 as stored in float32
    assert s0 == pytest.approx(0.3, rel=1e-6)
    L = {t: float(v.detach()) for t, v in model.losses(x, ys).items()}
    c = {"a": 0.5, "b": 1.0}
    assert w.weights() == pytest.approx({t: c[t] * math.exp(-s0) for t in TASKS})
    ref = reference_grads(
        model, lambda m: sum(c[t] * math.exp(-s0) * v for t, v in m.losses(x, ys).items())
    )
    w.backward(model.losses(x, ys), CountingBackward())
    for n, g in grads_of(model).items():
        torch.testing.assert_close(g, ref[n])
    # d/ds [c e^{-s} L + ½ s] = −c e^{-s} L + ½
    expected = {t: s0 - lr * (-c[t] * math.exp(-s0) * L[t] + 0.5) for t in TASKS}
    assert w.log_variances() == pytest.approx(expected, rel=1e-12)
    assert w.log_variances()["a"] != pytest.approx(s0)  # it moved


def test_forms():
    m = TinyMTL().shared_model()
    w = UncertaintyWeighting(form="classification")
    w.setup(TASKS, m, {})
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w = UncertaintyWeighting(form="regression")
    w.setup(TASKS, m, {})
    assert w.weights() == {"a": 0.5, "b": 0.5}
    w = UncertaintyWeighting(task_kinds={"a": "multiclass", "b": "regression"})
    w.setup(TASKS, m, {}, task_kinds={"a": "regression", "b": "regression"})  # override wins
    assert w.weights() == {"a": 1.0, "b": 0.5}


def test_auto_without_kinds_is_an_error():
    w = UncertaintyWeighting()
    with pytest.raises(ValueError, match="task_kinds"):
        w.setup(TASKS, TinyMTL().shared_model(), {})
    with pytest.raises(ValueError, match="weighting.form"):
        UncertaintyWeighting(form="gaussian")


def test_log_variance_is_not_clamped():
    """A task with a tiny loss drives s far below any plausible clamp (no freezing)."""
    model = TinyMTL()
    w = UncertaintyWeighting(lr=0.5, form="regression")
    w.setup(TASKS, model.shared_model(), {})
    for _ in range(300):
        p = next(model.parameters())
        losses = {"a": 1e-6 * (p.sum() * 0 + 1), "b": p.sum() * 0 + 100.0}
        w.backward(losses, lambda loss: None)
    s = w.log_variances()
    assert s["a"] < -10 and s["b"] > 4
