"""GradNorm against a hand computation (numpy, closed-form gradients) on a two-task linear model
``pred_i = a_iᵀ W x`` with MSE losses; W is the (only, hence last) shared layer."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from weighting_helpers import CountingBackward

from mtlrec.weighting.base import SharedModel
from mtlrec.weighting.gradnorm import GradNormWeighting, _task_gradients

T = ["t1", "t2"]


class Lin2(nn.Module):
    def __init__(self, W, a1, a2):
        super().__init__()
        self.W = nn.Parameter(torch.tensor(W))
        self.a = nn.ParameterDict({"t1": nn.Parameter(torch.tensor(a1)), "t2": nn.Parameter(torch.tensor(a2))})

    def shared(self, last=True):
        return SharedModel([self.W], [self.W] if last else [], [self.a[t] for t in T])

    def losses(self, X, Y):
        h = torch.tensor(X) @ self.W.T
        return {t: ((h @ self.a[t] - torch.tensor(Y[t])) ** 2).mean() for t in T}


def hand(W, a, X, Y):
    """Losses and closed-form gradients: ∇_W L_i = (2/N)·a_i ⊗ (Xᵀ res_i), ∇_{a_i} L_i = (2/N)(XWᵀ)ᵀ res_i."""
    N = X.shape[0]
    out = {}
    for t in T:
        res = X @ W.T @ a[t] - Y[t]
        out[t] = dict(L=np.mean(res**2), gW=(2 / N) * np.outer(a[t], X.T @ res), ga=(2 / N) * (X @ W.T).T @ res)
    return out


def gradnorm_step(w, L0, h, alpha, lr, floor=1e-3):
    """Algorithm 1 of the paper, one SGD step on w, then floor + renormalisation to Σw = T."""
    n = np.array([np.linalg.norm(h[t]["gW"]) for t in T])
    L = np.array([h[t]["L"] for t in T])
    G = w * n
    Lt = L / L0
    r = Lt / Lt.mean()
    target = G.mean() * r**alpha
    grad = np.sign(G - target) * n  # ∂ Σ|G_i − target_i| / ∂w_i, targets constant
    w_new = w - lr * grad
    naive = w_new.copy()
    w_new = np.maximum(w_new, floor)
    w_new = w_new * len(T) / w_new.sum()
    return w_new, dict(n=n, G=G, target=target, r=r, Lt=Lt, naive=naive)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 3))
    a1, a2 = rng.normal(size=2), rng.normal(size=2)
    X1, X2 = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    Y1 = {"t1": rng.normal(size=8), "t2": 3 * rng.normal(size=8)}
    Y2 = {"t1": rng.normal(size=8), "t2": 3 * rng.normal(size=8)}
    return W, {"t1": a1, "t2": a2}, (X1, Y1), (X2, Y2)


def test_two_steps_match_hand_computation(problem):
    W, a, (X1, Y1), (X2, Y2) = problem
    alpha, lr = 1.5, 0.01
    model = Lin2(W, a["t1"], a["t2"])
    gn = GradNormWeighting(alpha=alpha, optimizer=lambda p: torch.optim.SGD(p, lr=lr))
    gn.setup(T, model.shared(), {})
    gn.double()  # float64 like the hand computation

    # --- step 1: L_i(0) is this step's loss, so r_i = 1 and every target is Ḡ.
    h1 = hand(W, a, X1, Y1)
    L0 = np.array([h1[t]["L"] for t in T])
    w1, info1 = gradnorm_step(np.ones(2), L0, h1, alpha, lr)
    gn.backward(model.losses(X1, Y1), CountingBackward())
    stats = gn.last_stats()
    np.testing.assert_allclose([stats[t]["grad_norm"] for t in T], info1["n"], rtol=1e-10)
    np.testing.assert_allclose([stats[t]["target"] for t in T], [info1["G"].mean()] * 2, rtol=1e-10)
    np.testing.assert_allclose([gn.weights()[t] for t in T], w1, rtol=1e-10)
    assert sum(gn.weights().values()) == pytest.approx(2.0)
    assert not np.allclose(w1, 1.0)  # the step did something
    # model gradient: Σ w_i(t)·∇L_i with the weights *before* the update (here 1, 1)
    np.testing.assert_allclose(model.W.grad.numpy(), h1["t1"]["gW"] + h1["t2"]["gW"], rtol=1e-10)
    for t in T:
        np.testing.assert_allclose(model.a[t].grad.numpy(), h1[t]["ga"], rtol=1e-10)

    # --- move the model (plain SGD on its own gradients), then step 2 on another batch.
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    W2 = W - 0.1 * (h1["t1"]["gW"] + h1["t2"]["gW"])
    a2 = {t: a[t] - 0.1 * h1[t]["ga"] for t in T}
    h2 = hand(W2, a2, X2, Y2)
    w2, info2 = gradnorm_step(w1, L0, h2, alpha, lr)
    assert not np.allclose(info2["r"], 1.0)  # the α-dependent part of the target is exercised
    gn.backward(model.losses(X2, Y2), CountingBackward())
    stats = gn.last_stats()
    np.testing.assert_allclose([stats[t]["loss_ratio"] for t in T], info2["Lt"], rtol=1e-10)
    np.testing.assert_allclose([stats[t]["r"] for t in T], info2["r"], rtol=1e-10)
    np.testing.assert_allclose([stats[t]["G"] for t in T], info2["G"], rtol=1e-10)
    np.testing.assert_allclose([stats[t]["target"] for t in T], info2["target"], rtol=1e-10)
    np.testing.assert_allclose([gn.weights()[t] for t in T], w2, rtol=1e-10)
    np.testing.assert_allclose(
        model.W.grad.numpy(), w1[0] * h2["t1"]["gW"] + w1[1] * h2["t2"]["gW"], rtol=1e-10
    )
    for j, t in enumerate(T):
        np.testing.assert_allclose(model.a[t].grad.numpy(), w1[j] * h2[t]["ga"], rtol=1e-10)
    # L_i(0) stays the first step's loss
    np.testing.assert_allclose(gn.initial_losses.numpy(), L0, rtol=1e-12)


def test_default_adam_first_step_is_lr_times_sign(problem):
    W, a, (X1, Y1), _ = problem
    model = Lin2(W, a["t1"], a["t2"])
    gn = GradNormWeighting(alpha=1.5)  # Adam, lr 0.025
    gn.setup(T, model.shared(), {})
    gn.double()  # float64 like the hand computation
    h1 = hand(W, a, X1, Y1)
    n = np.array([np.linalg.norm(h1[t]["gW"]) for t in T])
    gn.backward(model.losses(X1, Y1), CountingBackward())
    # Adam's first step is lr·g/(|g|+eps); the task with the smaller gradient norm gains weight.
    up = int(np.argmin(n))
    expected = np.ones(2)
    expected[up] += 0.025
    expected[1 - up] -= 0.025
    np.testing.assert_allclose([gn.weights()[t] for t in T], expected, rtol=1e-6)


def test_weights_stay_positive_when_one_gradient_is_100x(problem):
    W, a, (X1, Y1), _ = problem
    Y = {"t1": Y1["t1"], "t2": 100 * Y1["t2"]}  # task 2's gradients ~100x larger
    model = Lin2(W, a["t1"], a["t2"])
    lr = 0.05
    gn = GradNormWeighting(alpha=1.5, optimizer=lambda p: torch.optim.SGD(p, lr=lr))
    gn.setup(T, model.shared(), {})
    gn.double()  # float64 like the hand computation
    h = hand(W, a, X1, Y)
    L0 = np.array([h[t]["L"] for t in T])
    w1, info = gradnorm_step(np.ones(2), L0, h, 1.5, lr)
    assert info["naive"][1] < 0  # the paper's update alone would make w_2 negative
    gn.backward(model.losses(X1, Y), CountingBackward())
    got = np.array([gn.weights()[t] for t in T])
    np.testing.assert_allclose(got, w1, rtol=1e-10)  # floor 1e-3, then renormalised
    assert (got > 0).all() and got.sum() == pytest.approx(2.0)
    # the floor does not absorb: the next step pushes w_2 back up
    for p in model.parameters():
        p.grad = None
    gn.backward(model.losses(X1, Y), CountingBackward())
    assert gn.weights()["t2"] > got[1]
    assert all(v > 0 for v in gn.weights().values())


def test_no_shared_layer_warns_once_and_keeps_unit_weights(problem):
    W, a, (X1, Y1), _ = problem
    model = Lin2(W, a["t1"], a["t2"])
    gn = GradNormWeighting()
    gn.setup(T, model.shared(last=False), {})
    gn.double()
    h = hand(W, a, X1, Y1)
    with pytest.warns(UserWarning, match="no shared layer"):
        gn.backward(model.losses(X1, Y1), CountingBackward())
    assert gn.weights() == {"t1": 1.0, "t2": 1.0}
    np.testing.assert_allclose(model.W.grad.numpy(), h["t1"]["gW"] + h["t2"]["gW"], rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gn.backward(model.losses(X1, Y1), CountingBackward())  # no second warning
    assert gn.weights() == {"t1": 1.0, "t2": 1.0}


def test_optimizer_state_round_trips_through_state_dict(problem):
    W, a, (X1, Y1), (X2, Y2) = problem
    m1, m2 = Lin2(W, a["t1"], a["t2"]), Lin2(W, a["t1"], a["t2"])
    g1, g2 = GradNormWeighting(), GradNormWeighting()
    g1.setup(T, m1.shared(), {})
    g2.setup(T, m2.shared(), {})
    g1.backward(m1.losses(X1, Y1), CountingBackward())
    g2.load_state_dict(g1.state_dict())
    g1.backward(m1.losses(X2, Y2), CountingBackward())
    g2.backward(m2.losses(X2, Y2), CountingBackward())
    assert g1.weights() == pytest.approx(g2.weights(), rel=1e-12)


def test_the_batched_task_gradients_are_each_tasks_own_gradient() -> None:
    """One backward with batched one-hot output gradients = one autograd.grad per task; a
    parameter a task does not reach gets zeros."""
    torch.manual_seed(0)
    shared, unused = nn.Linear(4, 6), nn.Parameter(torch.randn(3))
    heads = [nn.Linear(6, 1) for _ in range(3)]
    h = torch.relu(shared(torch.randn(10, 4)))
    losses = torch.stack([head(h).pow(2).mean() * (k + 1) for k, head in enumerate(heads)])
    params = [shared.weight, shared.bias, unused]
    batched = _task_gradients(losses, params)
    for k in range(3):
        own = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
        for got, want, p in zip(batched, own, params):
            assert got.shape == (3, *p.shape)
            assert torch.allclose(got[k], torch.zeros_like(p) if want is None else want, atol=1e-6)


@pytest.mark.parametrize("units", [[6], [5, 6]])  # the last depth is the first, or a deeper one
@pytest.mark.parametrize("inputs", ["shared", "per_expert", "per_group"])
def test_an_expert_layer_forms_each_tasks_weight_gradient_as_autograd_does(units, inputs) -> None:
    """GradNorm's W-gradients from the expert layer's kept input and the tasks' gradients on its
    pre-activation equal each task's own autograd gradient on the last depth's weight and bias."""
    from mtlrec.models.blocks.experts import ExpertLayer

    torch.manual_seed(0)
    layer = ExpertLayer(num_experts=4, in_dim=3, units=units)
    layer.capture_last_layer = True
    x = {"shared": torch.randn(10, 3), "per_expert": torch.randn(10, 4, 3), "per_group": torch.randn(10, 2, 3)}[inputs]
    out = layer(x)
    heads = [torch.randn(4, 6) for _ in range(3)]
    losses = torch.stack([(out * head).sum((1, 2)).pow(2).mean() * (k + 1) for k, head in enumerate(heads)])
    z = layer.last_layer_output()
    eye = torch.eye(3)
    (grad_z,) = torch.autograd.grad(losses, z, grad_outputs=eye, retain_graph=True, is_grads_batched=True)
    formed = layer.last_layer_gradients(grad_z)
    params = layer.last_layer_parameters()
    for k in range(3):
        own = torch.autograd.grad(losses[k], params, retain_graph=True)
        for got, want in zip(formed, own):
            assert got.shape[1:] == want.shape
            assert torch.allclose(got[k], want, atol=1e-5)


def test_gradnorm_takes_the_expert_layers_path_and_matches_autograds() -> None:
    """On MMoE, GradNorm reads W's task gradients from the expert layer (not a batched backward
    to W), with the same values as autograd's."""
    from tests.conftest import build_in_process

    module, datamodule = build_in_process(["arch=mmoe", "weighting=gradnorm", "data.num_train=200"])
    weighting = module.weighting
    assert weighting._model.last_shared_layer is module.architecture.experts
    batch = datamodule.tables["train"][torch.arange(64)]
    losses = module.task_losses(module.architecture(batch), batch)
    stacked = torch.stack([losses[t] for t in weighting.task_names if t in losses])
    last = weighting._model.last_shared_parameters
    formed = weighting._layer_gradients(stacked, last)
    assert formed is not None
    for got, want in zip(formed, _task_gradients(stacked, last)):
        assert torch.allclose(got, want, atol=1e-6)


def _own_norms_and_sum(losses: dict, params: list, weights: list[float]) -> tuple[list[float], list]:
    """Each task's ‖∇_W L_i‖ from its own autograd.grad, and Σ_i w_i∇_p L_i for every p."""
    norms, total = [], [torch.zeros_like(p) for p in params]
    for w, loss in zip(weights, losses.values()):
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        norms.append(float(torch.sqrt(sum(g.pow(2).sum() for g in grads))))
        total = [t + w * g for t, g in zip(total, grads)]
    return norms, total


@pytest.mark.parametrize("weights", [[0.5, 2.0, 0.5], [2.2, 0.3, 0.5], [0.3, 2.0, 0.7]])
def test_each_tasks_gradient_norm_is_its_own_whichever_task_has_the_largest_weight(weights) -> None:
    """Three tasks, unequal weights: one task's gradient on W is what remains of the model's (the
    task of largest weight), the others' come from the partial backward; every norm and the model's
    W-gradient equal each task's own autograd gradient."""
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5).double(), [nn.Linear(5, 1).double() for _ in range(3)]
    names = ["a", "b", "c"]
    gn = GradNormWeighting(optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    gn.setup(names, SharedModel(list(trunk.parameters()), list(trunk.parameters()),
                                [p for h in heads for p in h.parameters()]), {})
    gn.double()
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor(weights, dtype=torch.float64))
    x = torch.randn(16, 4, dtype=torch.float64)
    losses = {t: (h(torch.tanh(trunk(x))) - k).pow(2).mean() for k, (t, h) in enumerate(zip(names, heads))}
    params = list(trunk.parameters())
    norms, total = _own_norms_and_sum(losses, params, weights)
    gn.backward(losses, CountingBackward())
    stats = gn.last_stats()
    np.testing.assert_allclose([stats[t]["grad_norm"] for t in names], norms, rtol=1e-9)
    for p, want in zip(params, total):
        np.testing.assert_allclose(p.grad.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)


def test_gradnorm_on_mmoe_gives_each_tasks_own_norm_with_unequal_weights() -> None:
    """The expert layer's path with the task of largest weight second: float32 norms within 1e-4 of
    each task's own autograd norm on the last expert depth."""
    from tests.conftest import build_in_process

    module, datamodule = build_in_process(["arch=mmoe", "weighting=gradnorm", "data.num_train=200"])
    gn = module.weighting
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([0.4, 1.6]))
    batch = datamodule.tables["train"][torch.arange(64)]
    losses = module.task_losses(module.architecture(batch), batch)
    params = list(gn._model.last_shared_parameters)
    norms, total = _own_norms_and_sum(losses, params, [0.4, 1.6])
    gn.backward(losses, CountingBackward())
    stats = gn.last_stats()
    np.testing.assert_allclose([stats[t]["grad_norm"] for t in gn.task_names], norms, rtol=1e-4)
    for p, want in zip(params, total):
        assert torch.allclose(p.grad, want, rtol=1e-4, atol=1e-7)


def _three_task_problem(dtype, scales=(1.0, 1.0, 1.0)):
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5).to(dtype), [nn.Linear(5, 1).to(dtype) for _ in range(3)]
    shared = SharedModel(list(trunk.parameters()), list(trunk.parameters()), [p for h in heads for p in h.parameters()])
    x = torch.randn(16, 4, dtype=dtype)

    def losses():
        return {t: s * (h(torch.tanh(trunk(x))) - k).pow(2).mean()
                for k, (t, h, s) in enumerate(zip("abc", heads, scales))}
    return shared, list(trunk.parameters()), losses


def test_a_task_without_labelled_rows_is_never_the_remainder() -> None:
    """The task of largest weight has a zero loss (no labelled rows): its norm is exactly 0, as it
    is from the partial backward, not a remainder's rounding residue; the others are their own."""
    shared, params, make = _three_task_problem(torch.float64, scales=(0.0, 1.0, 1.0))
    gn = GradNormWeighting(optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    gn.setup(list("abc"), shared, {})
    gn.double()
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([2.2, 0.3, 0.5], dtype=torch.float64))
    losses = make()
    norms, _ = _own_norms_and_sum(losses, params, [2.2, 0.3, 0.5])
    gn.backward(losses, CountingBackward())
    stats = gn.last_stats()
    assert stats["a"]["grad_norm"] == 0.0
    np.testing.assert_allclose([stats[t]["grad_norm"] for t in "bc"], norms[1:], rtol=1e-9)


@pytest.mark.parametrize("autocast", [False, True])
def test_under_autocast_every_norm_comes_from_the_partial_backward(autocast, monkeypatch) -> None:
    """bf16 autocast: a remainder would carry the other tasks' bf16 rounding, scaled by how much
    larger their weighted norms are, so there every task's gradient comes from the partial backward
    (and is its own, to bf16's precision); in float32 one task's is the remainder."""
    shared, params, make = _three_task_problem(torch.float32, scales=(0.01, 1.0, 1.0))
    gn = GradNormWeighting(optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    gn.setup(list("abc"), shared, {})
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([2.0, 0.5, 0.5]))
    remainders = []
    original = GradNormWeighting._with_remainder
    monkeypatch.setattr(GradNormWeighting, "_with_remainder",
                        staticmethod(lambda *a: remainders.append(1) or original(*a)))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        losses = make()
        norms, _ = _own_norms_and_sum(losses, params, [2.0, 0.5, 0.5])
        gn.backward(losses, CountingBackward())
    assert remainders == ([] if autocast else [1])
    stats = gn.last_stats()
    np.testing.assert_allclose([stats[t]["grad_norm"] for t in "abc"], norms, rtol=2e-2 if autocast else 1e-5)
