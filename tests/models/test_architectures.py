"""Every architecture: output shapes per task kind, gradients, gates, the shared/task-specific
parameter partition the weightings rely on, and task isolation of the towers."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec
from mtlrec.data.table import Batch
from mtlrec.models.architectures.ple import CGC, PLE
from mtlrec.models.architectures.single_task import SingleTask
from mtlrec.models.base import TaskOutputs
from mtlrec.models.inputs.encoder import build_encoder
from mtlrec.training.objectives import objective_for

B = 32
EXPECTED_SHAPES = {"ctr": (B,), "cvr": (B,), "kind": (B, 3), "spend": (B,)}


def _ids(params) -> list[int]:
    return [id(p) for p in params]


def _losses(schema: Schema, outputs: TaskOutputs, batch: Batch) -> dict[str, torch.Tensor]:
    """Per-task losses over all rows (masks ignored: labels outside the mask are 0 after preprocessing)."""
    return {t.name: objective_for(t).loss(outputs.logits[t.name], batch.labels[t.name]) for t in schema.tasks}


# -- forward / backward ------------------------------------------------------------------------
def test_forward_shapes_and_dtypes(arch_name, build_arch, tiny_batch) -> None:
    model = build_arch(arch_name)
    out = model(tiny_batch)
    assert isinstance(out, TaskOutputs)
    assert set(out.logits) == set(EXPECTED_SHAPES)
    for task, shape in EXPECTED_SHAPES.items():
        assert tuple(out.logits[task].shape) == shape, (arch_name, task)
        assert out.logits[task].dtype == torch.float32
        assert torch.isfinite(out.logits[task]).all()


def test_backward_reaches_every_parameter(arch_name, build_arch, tiny_batch, tiny_schema) -> None:
    model = build_arch(arch_name)
    losses = _losses(tiny_schema, model(tiny_batch), tiny_batch)
    assert all(l.dim() == 0 and torch.isfinite(l) for l in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{arch_name}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{arch_name}: {name} got an all-zero gradient"


def test_forward_is_deterministic_in_eval(arch_name, build_arch, tiny_batch) -> None:
    model = build_arch(arch_name).eval()
    a, b = model(tiny_batch), model(tiny_batch)
    for task in EXPECTED_SHAPES:
        assert torch.equal(a.logits[task], b.logits[task])


def test_rows_are_independent(arch_name, build_arch, tiny_batch) -> None:
    """No layer mixes rows: a row's logits are the same alone as in a batch."""
    model = build_arch(arch_name).eval()
    full = model(tiny_batch)
    row = lambda d: {k: v[5:6] for k, v in d.items()}  # noqa: E731
    one = model(Batch(row(tiny_batch.features), row(tiny_batch.labels), row(tiny_batch.masks), 1))
    for task in EXPECTED_SHAPES:
        torch.testing.assert_close(one.logits[task], full.logits[task][5:6], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["single_task", "shared_bottom", "cross_stitch", "omoe", "mmoe", "cgc", "ple2"])
def test_vector_regression_and_numeric_only_schema(name, build_arch) -> None:
    """A schema without categoricals, with a 2-D regression target and a 3-class task."""
    schema = Schema(
        features=tuple(FeatureSpec(f"x{i}", "numeric") for i in range(5)),
        tasks=(TaskSpec("vec", "regression", "vec", output_dim=2), TaskSpec("cls", "multiclass", "cls", num_classes=3)),
        main_task="vec",
    )
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(7, 5)), columns=[f"x{i}" for i in range(5)])
    pre = Preprocessor(schema).fit(frame.assign(vec=0.0, cls=0))  # fit sees the label columns (they hold no state here)
    model = build_arch(name, preprocessor=pre)
    batch = pre.transform(frame, with_labels=False)[slice(0, 7)]
    assert set(batch.features) == {"numeric"} and tuple(batch.features["numeric"].shape) == (7, 5)
    out = model(batch)
    assert tuple(out.logits["vec"].shape) == (7, 2)
    assert tuple(out.logits["cls"].shape) == (7, 3)


# -- gates -------------------------------------------------------------------------------------
EXPECTED_GATES = {
    # name -> {gate key: number of experts it mixes}; tiny schema has 4 tasks
    "omoe": {"shared": 3},
    "mmoe": {t: 3 for t in EXPECTED_SHAPES},
    "cgc": {f"level0/{t}": 2 + 2 for t in EXPECTED_SHAPES},
    "ple1": {f"level0/{t}": 2 + 2 for t in EXPECTED_SHAPES},
    "ple2": {
        **{f"level{i}/{t}": 2 + 2 for i in (0, 1) for t in EXPECTED_SHAPES},
        "level0/shared": 4 * 2 + 2,
    },
    "ple3": {
        **{f"level{i}/{t}": 1 + 2 for i in (0, 1, 2) for t in EXPECTED_SHAPES},
        "level0/shared": 4 * 1 + 2,
        "level1/shared": 4 * 1 + 2,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_GATES))
def test_gate_weights_are_distributions(name, build_arch, tiny_batch) -> None:
    out = build_arch(name)(tiny_batch)
    assert set(out.gates) == set(EXPECTED_GATES[name])
    for key, experts in EXPECTED_GATES[name].items():
        g = out.gates[key]
        assert tuple(g.shape) == (B, experts), key
        assert (g >= 0).all(), key
        torch.testing.assert_close(g.sum(dim=1), torch.ones(B), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["single_task", "shared_bottom", "cross_stitch"])
def test_gateless_architectures_report_no_gates(name, build_arch, tiny_batch) -> None:
    assert build_arch(name)(tiny_batch).gates == {}


# -- shared / task-specific partition ----------------------------------------------------------
def test_shared_model_partitions_parameters(arch_name, build_arch) -> None:
    model = build_arch(arch_name)
    sm = model.shared_model()
    shared, task, every = _ids(sm.shared_parameters), _ids(sm.task_parameters), _ids(model.parameters())
    assert len(shared) == len(set(shared)) and len(task) == len(set(task)), "a parameter listed twice"
    assert not set(shared) & set(task)
    assert set(shared) | set(task) == set(every)
    assert len(shared) + len(task) == len(every)


def test_single_task_shares_nothing(build_arch) -> None:
    sm = build_arch("single_task").shared_model()
    assert sm.shared_parameters == []
    assert sm.last_shared_parameters == []
    assert len(sm.task_parameters) == len(list(build_arch("single_task").parameters()))


def test_last_shared_parameters_are_shared(multi_task_arch_name, build_arch) -> None:
    sm = build_arch(multi_task_arch_name).shared_model()
    last = _ids(sm.last_shared_parameters)
    assert last, f"{multi_task_arch_name} has no last shared layer"
    assert set(last) <= set(_ids(sm.shared_parameters))


def test_mmoe_partition_exactly(build_arch) -> None:
    model = build_arch("mmoe")
    sm = model.shared_model()
    assert set(_ids(sm.task_parameters)) == set(_ids(model.gates.parameters())) | set(_ids(model.towers.parameters()))
    assert set(_ids(sm.shared_parameters)) == set(_ids(model.experts.parameters())) | set(
        _ids(model.encoder.parameters())
    )
    assert _ids(sm.last_shared_parameters) == [id(model.experts.weights[-1]), id(model.experts.biases[-1])]


def test_omoe_gate_and_shared_bottom_bottom_are_shared(build_arch) -> None:
    omoe = build_arch("omoe")
    assert set(_ids(omoe.gate.parameters())) <= set(_ids(omoe.shared_model().shared_parameters))
    assert set(_ids(omoe.shared_model().task_parameters)) == set(_ids(omoe.towers.parameters()))
    sb = build_arch("shared_bottom")
    sm = sb.shared_model()
    assert set(_ids(sm.shared_parameters)) == set(_ids(sb.bottom.parameters())) | set(_ids(sb.encoder.parameters()))
    assert _ids(sm.last_shared_parameters) == _ids(sb.bottom.last_linear().parameters())
    assert sb.bottom.last_linear().out_features == 12


def test_ple_partition(build_arch) -> None:
    model = build_arch("ple2")
    sm = model.shared_model()
    shared, task = set(_ids(sm.shared_parameters)), set(_ids(sm.task_parameters))
    for level in model.levels:
        assert set(_ids(level.shared_experts.parameters())) <= shared
        assert set(_ids(level.task_gates.parameters())) <= task  # 2 levels: gates reach one task only
    # below the last level, task experts feed the shared gate: every task's loss reaches them
    assert set(_ids(model.levels[0].task_experts.parameters())) <= shared
    assert set(_ids(model.levels[-1].task_experts.parameters())) <= task
    assert set(_ids(model.levels[0].shared_gate.parameters())) <= shared
    assert model.levels[-1].shared_gate is None
    assert _ids(sm.last_shared_parameters) == _ids(model.levels[-1].shared_experts.last_layer_parameters())


# The contract documented on SharedModel (mtlrec/weighting/base.py): "each element of
# task_parameters is used by one task only". Checked element-wise, since several tasks' experts may
# sit stacked in one tensor: no element may receive a gradient from two tasks' losses.


def test_task_parameters_serve_one_task_each(arch_name, build_arch, tiny_batch, tiny_schema, request) -> None:
    model = build_arch(arch_name)
    params = model.shared_model().task_parameters
    losses = _losses(tiny_schema, model(tiny_batch), tiny_batch)
    used_by = [torch.zeros_like(p, dtype=torch.int64) for p in params]
    for loss in losses.values():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        for count, g in zip(used_by, grads):
            if g is not None:
                count += (g != 0).long()
    shared_elements = sum(int((c > 1).sum()) for c in used_by)
    assert shared_elements == 0, f"{shared_elements} task-parameter elements get gradients from several tasks"
    # and every task-parameter element is used by some task at all
    assert sum(int((c > 0).sum()) for c in used_by) > 0


def test_towers_are_task_isolated(arch_name, build_arch, get_tower, tiny_batch) -> None:
    """Perturbing task t's tower changes t's logits and no other task's."""
    model = build_arch(arch_name).eval()
    with torch.no_grad():
        base = model(tiny_batch).logits
        for task in EXPECTED_SHAPES:
            perturbed = copy.deepcopy(model)
            for p in get_tower(perturbed, task).parameters():
                p.add_(0.5 * torch.randn_like(p))
            out = perturbed(tiny_batch).logits
            assert not torch.allclose(out[task], base[task]), f"{task}'s tower does not reach its logits"
            for other in EXPECTED_SHAPES:
                if other != task:
                    assert torch.equal(out[other], base[other]), f"perturbing {task}'s tower changed {other}"


def test_single_task_nets_are_fully_independent(build_arch, tiny_batch) -> None:
    model = build_arch("single_task").eval()
    with torch.no_grad():
        base = model(tiny_batch).logits
        for p in model.nets["ctr"].parameters():  # encoder and body too, not only the tower
            p.add_(1.0)
        out = model(tiny_batch).logits
    assert not torch.allclose(out["ctr"], base["ctr"])
    for t in ("cvr", "kind", "spend"):
        assert torch.equal(out[t], base[t])
    assert isinstance(model, SingleTask)


# -- PLE / CGC sizes -------------------------------------------------------------------------
def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_ple_one_level_has_cgc_parameter_count(tiny_preprocessed) -> None:
    pre, _ = tiny_preprocessed
    kwargs = dict(specific_experts=2, shared_experts=3, expert_units=(12, 6), tower_units=(5,))
    enc = lambda: build_encoder(pre, embedding_dim=4)  # noqa: E731
    ple, cgc = PLE(pre.schema, enc(), num_levels=1, **kwargs), CGC(pre.schema, enc(), **kwargs)
    assert _count(ple) == _count(cgc)
    assert [tuple(p.shape) for p in ple.parameters()] == [tuple(p.shape) for p in cgc.parameters()]
    assert len(cgc.levels) == 1 and cgc.levels[0].shared_gate is None
    # CGC ignores a num_levels it may be handed by a config
    assert len(CGC(pre.schema, enc(), num_levels=3, **kwargs).levels) == 1


def test_cgc_is_ple_with_one_level(build_arch, tiny_batch) -> None:
    """Same seed, same construction order: CGC and PLE(num_levels=1) are the same function."""
    cgc, ple = build_arch("cgc", seed=11).eval(), build_arch("ple1", seed=11).eval()
    a, b = cgc(tiny_batch), ple(tiny_batch)
    for task in EXPECTED_SHAPES:
        assert torch.equal(a.logits[task], b.logits[task])
    assert set(a.gates) == set(b.gates)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_ple_parameter_count_formula(levels, tiny_preprocessed) -> None:
    pre, _ = tiny_preprocessed
    T, S, H, U, E, tower = 4, 2, 3, 6, 4, 5  # tasks, specific, shared experts, expert width, emb dim, tower width
    model = PLE(pre.schema, build_encoder(pre, embedding_dim=E), num_levels=levels, specific_experts=S,
                shared_experts=H, expert_units=(U,), tower_units=(tower,))
    emb_in = 2 * E + 2  # 2 categorical fields, 2 numerics
    expected = sum(pre.transformers["categorical"].field_sizes) * E
    in_dim = emb_in
    for i in range(levels):
        expected += (T * S + H) * (in_dim * U + U)  # experts
        expected += T * (in_dim * (S + H) + S + H)  # task gates
        if i < levels - 1:
            expected += in_dim * (T * S + H) + T * S + H  # shared gate
        in_dim = U
    logit = {"ctr": 1, "cvr": 1, "kind": 3, "spend": 1}
    expected += sum(U * tower + tower + tower * d + d for d in logit.values())
    assert _count(model) == expected


def test_ple_rejects_bad_sizes(tiny_preprocessed) -> None:
    pre, _ = tiny_preprocessed
    with pytest.raises(ValueError, match="num_levels"):
        PLE(pre.schema, build_encoder(pre), num_levels=0)
    with pytest.raises(ValueError, match="specific_experts"):
        PLE(pre.schema, build_encoder(pre), specific_experts=0)
