"""Building blocks: the batched ExpertLayer against a per-expert loop, gates, mixing, cross-stitch
units, the fused embedding, MLPs and towers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrec.models.architectures.cross_stitch import CrossStitchUnit
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.gate import Gate, gate_bank, gate_softmax, mix
from mtlrec.models.blocks.mlp import MLP, Tower


def reference_experts(layer: ExpertLayer) -> list[nn.Sequential]:
    """One plain ``nn.Linear``/ReLU stack per expert, holding copies of the layer's weights."""
    nets = []
    for e in range(layer.num_experts):
        mods: list[nn.Module] = []
        for w, b in zip(layer.weights, layer.biases):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[e].T)
                lin.bias.copy_(b[e])
            mods += [lin, nn.ReLU()]
        nets.append(nn.Sequential(*mods))
    return nets


def loop_forward(layer: ExpertLayer, x: torch.Tensor) -> torch.Tensor:
    """Python loop over experts: expert e reads x (2-D), x[:, e] (per expert) or its group's input."""
    nets, E = reference_experts(layer), layer.num_experts
    outs = []
    for e, net in enumerate(nets):
        if x.dim() == 2:
            xe = x
        elif x.shape[1] == E:
            xe = x[:, e]
        else:
            xe = x[:, e // (E // x.shape[1])]
        outs.append(net(xe))
    return torch.stack(outs, dim=1)


CASES = {
    # id: (num_experts, in_dim, units, input shape)
    "shared-2d": (4, 6, (5,), (9, 6)),
    "per-expert-3d": (4, 6, (5,), (9, 4, 6)),
    "grouped-2x2": (4, 6, (5,), (9, 2, 6)),
    "grouped-3x2": (6, 6, (5,), (9, 3, 6)),
    "single-group": (3, 6, (5,), (9, 1, 6)),
    "depth2-2d": (4, 6, (5, 3), (9, 6)),
    "depth2-per-expert": (4, 6, (5, 3), (9, 4, 6)),
    "depth2-grouped": (6, 6, (5, 3), (9, 2, 6)),
    "depth3-2d": (2, 4, (7, 5, 3), (9, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_expert_layer_matches_loop(case: str) -> None:
    E, in_dim, units, shape = CASES[case]
    torch.manual_seed(0)
    layer = ExpertLayer(E, in_dim, units)
    x = torch.randn(*shape)
    out = layer(x)
    assert tuple(out.shape) == (shape[0], E, units[-1])
    torch.testing.assert_close(out, loop_forward(layer, x), rtol=1e-5, atol=1e-6)


def test_expert_layer_gradients_match_loop() -> None:
    torch.manual_seed(1)
    layer = ExpertLayer(4, 6, (5, 3))
    x = torch.randn(8, 2, 6)
    layer(x).pow(2).sum().backward()
    nets = reference_experts(layer)
    ref = torch.stack([net(x[:, e // 2]) for e, net in enumerate(nets)], dim=1)
    ref.pow(2).sum().backward()
    for depth in range(2):
        for e, net in enumerate(nets):
            lin = net[2 * depth]
            torch.testing.assert_close(layer.weights[depth].grad[e], lin.weight.grad.T, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(layer.biases[depth].grad[e], lin.bias.grad, rtol=1e-5, atol=1e-6)


def test_expert_layer_outputs_are_relu() -> None:
    torch.manual_seed(2)
    out = ExpertLayer(3, 4, (6,))(torch.randn(50, 4))
    assert (out >= 0).all() and (out == 0).any()


def test_expert_layer_init_like_linear() -> None:
    torch.manual_seed(3)
    layer = ExpertLayer(5, 16, (9, 4))
    for w, b, fan_in in zip(layer.weights, layer.biases, (16, 9)):
        bound = 1 / math.sqrt(fan_in)
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert w.abs().max() > 0.8 * bound  # really uniform on the full range, not a narrower init
    assert [tuple(w.shape) for w in layer.weights] == [(5, 16, 9), (5, 9, 4)]
    assert layer.output_dim == 4
    assert layer.last_layer_parameters() == [layer.weights[1], layer.biases[1]]


def test_expert_layer_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="3 input groups cannot feed 4 experts evenly"):
        ExpertLayer(4, 6, (5,))(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="expert"):
        ExpertLayer(0, 6, (5,))
    with pytest.raises(ValueError, match="hidden width"):
        ExpertLayer(2, 6, ())


def test_expert_layer_experts_are_independent() -> None:
    """Changing expert 1's weights leaves experts 0 and 2 untouched."""
    torch.manual_seed(4)
    layer = ExpertLayer(3, 5, (4, 4))
    x = torch.randn(6, 5)
    before = layer(x).detach()
    with torch.no_grad():
        layer.weights[0][1].add_(1.0)
    after = layer(x).detach()
    assert torch.equal(after[:, 0], before[:, 0]) and torch.equal(after[:, 2], before[:, 2])
    assert not torch.equal(after[:, 1], before[:, 1])


# -- gates -------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_gate_is_a_tempered_softmax(temperature: float) -> None:
    torch.manual_seed(5)
    gate = Gate(7, 4, temperature)
    x = torch.randn(20, 7) * 30  # large logits: still a valid distribution
    w = gate(x)
    assert tuple(w.shape) == (20, 4)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(20), rtol=0, atol=1e-6)
    expected = torch.softmax((x @ gate.linear.weight.T + gate.linear.bias) / temperature, dim=-1)
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_gate_input", [False, True])
@pytest.mark.parametrize("temperatures", [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0)])
def test_a_gate_bank_gives_each_gates_own_weights_and_gradients(per_gate_input, temperatures) -> None:
    torch.manual_seed(0)
    gates = [Gate(5, 4, t) for t in temperatures]
    x = torch.randn(7, len(gates), 5) if per_gate_input else torch.randn(7, 5)
    banked = gate_bank(gates, x)
    assert banked.shape == (7, len(gates), 4)
    one_by_one = torch.stack([g(x[:, k] if per_gate_input else x) for k, g in enumerate(gates)], dim=1)
    assert torch.allclose(banked, one_by_one, atol=1e-6)
    weights = torch.randn_like(banked)
    grads = torch.autograd.grad((banked * weights).sum(), [g.linear.weight for g in gates])
    expected = torch.autograd.grad((one_by_one * weights).sum(), [g.linear.weight for g in gates])
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, atol=1e-6)


def test_gate_softmax_is_torch_softmax_forward_and_backward() -> None:
    """The CPU composition: torch.softmax's values, its exact gradient (gradcheck in float64),
    its gradient under vmap (seed stacking) and under torch.compile's tracing of the function."""
    torch.manual_seed(7)
    scores = (torch.randn(6, 3, 5, dtype=torch.float64) * 20).requires_grad_()
    torch.testing.assert_close(gate_softmax(scores), torch.softmax(scores, -1))
    assert torch.autograd.gradcheck(gate_softmax, (scores,))
    upstream = torch.randn(6, 3, 5, dtype=torch.float64)
    expected = torch.autograd.grad((torch.softmax(scores, -1) * upstream).sum(), scores)[0]
    per_row = torch.func.vmap(torch.func.grad(lambda s, u: (gate_softmax(s) * u).sum()))(scores, upstream)
    torch.testing.assert_close(per_row, expected)
    compiled = torch.compile(lambda s: (gate_softmax(s) * upstream).sum(), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(torch.autograd.grad(compiled(scores), scores)[0], expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the dtype torch.softmax keeps under CPU autocast
        assert gate_softmax(scores.float().bfloat16()).dtype == torch.softmax(scores.bfloat16(), -1).dtype


def test_gate_rejects_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        Gate(3, 2, temperature=0)


def test_mix_is_a_weighted_sum() -> None:
    torch.manual_seed(6)
    experts, weights = torch.randn(5, 3, 4), torch.softmax(torch.randn(5, 3), -1)
    expected = sum(weights[:, e : e + 1] * experts[:, e] for e in range(3))
    torch.testing.assert_close(mix(experts, weights), expected)


# -- cross-stitch ------------------------------------------------------------------------------
@pytest.mark.parametrize("tasks,off", [(2, 0.1), (3, 0.05), (5, 0.025)])
def test_cross_stitch_unit_init(tasks: int, off: float) -> None:
    alpha = CrossStitchUnit(tasks).alpha.detach()
    expected = torch.full((tasks, tasks), off)
    expected.fill_diagonal_(0.9)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(alpha.sum(1), torch.ones(tasks))


def test_cross_stitch_unit_single_task_is_identity_and_mixes() -> None:
    assert CrossStitchUnit(1).alpha.item() == 1.0
    unit = CrossStitchUnit(2)
    h = torch.randn(4, 2, 3)
    out = unit(h)
    torch.testing.assert_close(out[:, 0], 0.9 * h[:, 0] + 0.1 * h[:, 1])
    torch.testing.assert_close(out[:, 1], 0.1 * h[:, 0] + 0.9 * h[:, 1])


# -- MLP, tower ---------------------------------------------------------------------
def test_mlp_and_tower_shapes() -> None:
    mlp = MLP(6, (8, 4), dropout=0.1)
    assert mlp.output_dim == 4 and mlp.last_linear().out_features == 4
    assert sum(isinstance(m, nn.Dropout) for m in mlp) == 2
    identity = MLP(6, ())
    assert identity.output_dim == 6 and identity.last_linear() is None
    x = torch.randn(3, 6)
    assert torch.equal(identity(x), x)
    tower = Tower(6, (5,), 3)
    assert tuple(tower(x).shape) == (3, 3)
    assert tuple(Tower(6, (), 1)(x).shape) == (3, 1)
