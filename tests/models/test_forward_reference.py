"""Forward passes of the routing architectures against plain references of the papers' equations.

The references below read the modules' own parameter tensors (stacked expert weights, gates,
cross-stitch units) but compute with one expert, one gate and one task at a time, from the
equations rather than from the modules' batched code:

* MMoE (Ma et al., KDD 2018, eq. 5-6): ``y_k = h_k(Σ_e g_k(x)_e f_e(x))``, ``g_k(x) = softmax(W_k x)``;
  OMoE is the same with one gate shared by all tasks.
* CGC / PLE (Tang et al., RecSys 2020, eq. 1-5): at each level, task k's gate reads task k's input
  and mixes task k's own experts with the shared experts; below the last level the shared gate
  reads the shared input and mixes *all* experts; the next level's task-k input is task k's gate
  output and its shared input the shared gate's output; towers read the last level's task outputs.
* Cross-stitch (Misra et al., CVPR 2016): after every layer, ``h'_k = Σ_j α_kj h_j`` over the columns'
  activations.

Weights are re-drawn as ``randn · 0.5`` under a fixed seed so the gates are far from uniform and
the cross-stitch units far from identity: a gate reading the wrong input, mixing the wrong experts,
or experts applied to the wrong input changes the logits far beyond the tolerance. Only the
input encoder (a lookup) and the towers (plain MLP heads) are reused as they are.
"""

from __future__ import annotations

import pytest
import torch

from mtlrec.models.architectures.cross_stitch import CrossStitch
from mtlrec.models.architectures.ple import PLE
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.gate import Gate
from mtlrec.models.inputs.encoder import build_encoder

ATOL = 1e-5


def randomise(model: torch.nn.Module, seed: int = 123) -> torch.nn.Module:
    """Every parameter re-drawn from N(0, 0.25), in eval mode (no dropout in these models anyway)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def expert(layer: ExpertLayer, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e`` of a stacked layer alone: ReLU(x W_e + b_e) at every depth."""
    h = x
    for w, b in zip(layer.weights, layer.biases):
        h = torch.relu(h @ w[e] + b[e])
    return h


def gate(g: Gate, x: torch.Tensor) -> torch.Tensor:
    """softmax(W x + b) with the gate's temperature, written out."""
    z = (x @ g.linear.weight.T + g.linear.bias) / g.temperature
    z = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return z / z.sum(dim=1, keepdim=True)


def mixture(weights: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """Σ_e weights[:, e] · outputs[e], one expert at a time."""
    assert weights.shape[1] == len(outputs)
    total = torch.zeros_like(outputs[0])
    for e, out in enumerate(outputs):
        total = total + weights[:, e : e + 1] * out
    return total


def head(model, task: str, h: torch.Tensor) -> torch.Tensor:
    out = model.towers[task](h)
    return out.squeeze(-1) if model.logit_dims[task] == 1 else out


def assert_logits_match(model, batch, expected: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        got = model(batch).logits
    assert set(got) == set(expected)
    for task, value in expected.items():
        assert got[task].shape == value.shape, task
        err = float((got[task] - value).abs().max())
        assert torch.allclose(got[task], value, atol=ATOL), f"{task}: max |module - reference| = {err:.3g}"


def assert_not_uniform(weights: torch.Tensor) -> None:
    """The gates must actually discriminate between experts, or a swapped expert would go unseen."""
    spread = (weights.max(dim=1).values - weights.min(dim=1).values).mean()
    assert spread > 0.1, f"gate too close to uniform (mean spread {float(spread):.3f})"


# -- MMoE / OMoE -------------------------------------------------------------------------------
def mmoe_reference(model, batch) -> tuple[dict, dict]:
    x = model.encoder(batch)
    f = [expert(model.experts, e, x) for e in range(model.experts.num_experts)]
    logits, gates = {}, {}
    for task in model.task_names:
        g = gate(model.gates[task], x)  # eq. 6: the task's gate reads the input x
        gates[task] = g
        logits[task] = head(model, task, mixture(g, f))  # eq. 5
    return logits, gates


def test_mmoe_matches_reference(build_arch, tiny_batch) -> None:
    model = randomise(build_arch("mmoe"))
    with torch.no_grad():
        expected, gates = mmoe_reference(model, tiny_batch)
        got = model(tiny_batch).gates
    for task, g in gates.items():
        assert_not_uniform(g)
        assert torch.allclose(got[task], g, atol=ATOL), f"reported gate of {task}"
    # every task mixes differently: a shared gate standing in for per-task gates would show
    assert not torch.allclose(gates["ctr"], gates["cvr"], atol=1e-2)
    assert_logits_match(model, tiny_batch, expected)


def test_omoe_matches_reference(build_arch, tiny_batch) -> None:
    model = randomise(build_arch("omoe"))
    with torch.no_grad():
        x = model.encoder(tiny_batch)
        f = [expert(model.experts, e, x) for e in range(model.experts.num_experts)]
        g = gate(model.gate, x)
        assert_not_uniform(g)
        expected = {t: head(model, t, mixture(g, f)) for t in model.task_names}
        assert torch.allclose(model(tiny_batch).gates["shared"], g, atol=ATOL)
    assert_logits_match(model, tiny_batch, expected)


# -- CGC / PLE ---------------------------------------------------------------------------------
def ple_reference(model, batch) -> tuple[dict, dict, list]:
    """Levels computed expert by expert; returns logits, gate weights, and per level the
    (task inputs, shared input) it read."""
    x = model.encoder(batch)
    T = len(model.task_names)
    task_in, shared_in = [x] * T, x
    gates, inputs = {}, []
    for i, level in enumerate(model.levels):
        inputs.append((task_in, shared_in))
        S, H = level.specific, level.shared_experts.num_experts
        assert level.task_experts.num_experts == T * S
        # task k's experts (indices k·S … k·S+S-1 of the stacked layer) read task k's input
        specific = [[expert(level.task_experts, k * S + j, task_in[k]) for j in range(S)] for k in range(T)]
        # shared experts read the shared input
        shared = [expert(level.shared_experts, h, shared_in) for h in range(H)]
        next_task = []
        for k, task in enumerate(model.task_names):
            g = gate(level.task_gates[k], task_in[k])  # task k's gate reads task k's input
            gates[f"level{i}/{task}"] = g
            next_task.append(mixture(g, specific[k] + shared))  # its own experts, then the shared ones
        if i < len(model.levels) - 1:
            g = gate(level.shared_gate, shared_in)  # the shared gate reads the shared input ...
            gates[f"level{i}/shared"] = g
            everything = [out for k in range(T) for out in specific[k]] + shared  # ... and mixes all
            shared_in = mixture(g, everything)
        else:
            assert level.shared_gate is None, "the last level has no shared gate"
        task_in = next_task
    logits = {t: head(model, t, task_in[k]) for k, t in enumerate(model.task_names)}
    return logits, gates, inputs


PLE_NAMES = ["cgc", "ple1", "ple2", "ple3"]


@pytest.mark.parametrize("name", PLE_NAMES)
def test_ple_matches_reference(name, build_arch, tiny_batch) -> None:
    model = randomise(build_arch(name))
    with torch.no_grad():
        expected, gates, inputs = ple_reference(model, tiny_batch)
        got = model(tiny_batch).gates
    assert set(got) == set(gates)
    for key, g in gates.items():
        assert_not_uniform(g)
        assert torch.allclose(got[key], g, atol=ATOL), f"reported gate {key}"
    # above the first level, each task's input and the shared input really differ, so a gate or
    # expert reading the wrong one is visible in the logits
    for task_in, shared_in in inputs[1:]:
        for k, t_in in enumerate(task_in):
            assert (t_in - shared_in).abs().max() > 0.1, f"task {k} input equals the shared input"
            for other in task_in[k + 1 :]:
                assert (t_in - other).abs().max() > 0.1
    assert_logits_match(model, tiny_batch, expected)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_ple_matches_reference_deep_experts_and_temperature(levels, tiny_preprocessed, tiny_batch) -> None:
    """Unequal task/shared expert counts, two-layer experts and a gate temperature: index slips
    (task k's experts taken as k·H, shared before specific) and a dropped temperature show here."""
    pre, _ = tiny_preprocessed
    torch.manual_seed(0)
    model = PLE(pre.schema, build_encoder(pre, embedding_dim=3), num_levels=levels, specific_experts=2,
                shared_experts=3, expert_units=(7, 5), tower_units=(4,), gate_temperature=0.7)
    model = randomise(model, seed=7)
    with torch.no_grad():
        expected, gates, _ = ple_reference(model, tiny_batch)
        got = model(tiny_batch).gates
    for key, g in gates.items():
        assert torch.allclose(got[key], g, atol=ATOL), key
    assert_logits_match(model, tiny_batch, expected)


# -- Cross-stitch ------------------------------------------------------------------------------
def cross_stitch_reference(model: CrossStitch, batch) -> dict:
    x = model.encoder(batch)
    T = len(model.task_names)
    h = [x] * T  # every column starts from the shared encoder's output
    for column, stitch in zip(model.columns, model.stitches):
        a = [expert(column, k, h[k]) for k in range(T)]  # column k's layer on column k's activations
        alpha = stitch.alpha
        h = [sum(alpha[k, j] * a[j] for j in range(T)) for k in range(T)]  # h'_k = Σ_j α_kj a_j
    return {t: head(model, t, h[k]) for k, t in enumerate(model.task_names)}


def test_cross_stitch_matches_reference(build_arch, tiny_batch) -> None:
    model = randomise(build_arch("cross_stitch"))
    for stitch in model.stitches:  # far from identity, so reading the wrong column shows
        assert (stitch.alpha - torch.eye(len(model.task_names))).abs().max() > 0.5
    with torch.no_grad():
        expected = cross_stitch_reference(model, tiny_batch)
    assert_logits_match(model, tiny_batch, expected)


def test_cross_stitch_at_init_is_mostly_separate(build_arch, tiny_batch) -> None:
    """At its near-identity init (α_kk = 0.9) the reference agrees too, with the module's own α."""
    model = build_arch("cross_stitch").eval()
    with torch.no_grad():
        expected = cross_stitch_reference(model, tiny_batch)
    assert_logits_match(model, tiny_batch, expected)
