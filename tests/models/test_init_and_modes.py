"""Initialisation breaks the symmetry between experts and between towers, and dropout exists in
training but is off at evaluation (in the bare architectures and through Lightning's validate).

Identical experts (or towers) at init get identical gradients through a symmetric mixture and
never separate: an MMoE whose experts start equal is a one-expert model. Dropout that stays on at
evaluation makes validation metrics noisy and checkpoint selection a lottery.
"""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.models.architectures.cross_stitch import CrossStitch
from mtlrec.models.architectures.mmoe import MMoE
from mtlrec.models.architectures.omoe import OMoE
from mtlrec.models.architectures.ple import CGC, PLE
from mtlrec.models.architectures.shared_bottom import SharedBottom
from mtlrec.models.architectures.single_task import SingleTask
from mtlrec.models.blocks.experts import ExpertLayer
from mtlrec.models.blocks.mlp import MLP
from mtlrec.models.inputs.encoder import build_encoder
from mtlrec.training.module import MultiTaskModule
from mtlrec.weighting.fixed import FixedWeighting
from tests.conftest import ARCH_FACTORIES

TASKS = ("ctr", "cvr", "kind", "spend")
EXPERT_ARCHS = ["omoe", "mmoe", "cgc", "ple1", "ple2", "ple3", "cross_stitch"]  # cross-stitch: its columns


def _min_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


# -- (a) symmetry breaking at init ---------------------------------------------------------------
@pytest.mark.parametrize("name", EXPERT_ARCHS)
def test_experts_start_different(name, build_arch, tiny_batch) -> None:
    """No two experts (within a layer or across layers of the same shape) share their initial
    weights, and on a real batch no two experts of a layer give the same output."""
    model = build_arch(name).eval()
    layers = [m for m in model.modules() if isinstance(m, ExpertLayer)]
    assert layers, f"{name} has no ExpertLayer"
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for layer in layers:
        for w, b in zip(layer.weights, layer.biases):
            for e in range(layer.num_experts):
                by_shape.setdefault(tuple(w[e].shape), []).append(w[e])
                by_shape.setdefault(tuple(b[e].shape), []).append(b[e])
    for shape, slices in by_shape.items():
        for i, j in itertools.combinations(range(len(slices)), 2):
            assert _min_gap(slices[i], slices[j]) > 1e-3, f"{name}: two experts start with equal {shape} weights"

    outputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outputs.append(o)) for layer in layers]
    with torch.no_grad():
        model(tiny_batch)
    for h in hooks:
        h.remove()
    assert len(outputs) == len(layers)
    for out in outputs:
        assert out.abs().sum() > 0
        for e, f in itertools.combinations(range(out.shape[1]), 2):
            assert _min_gap(out[:, e], out[:, f]) > 1e-4, f"{name}: experts {e} and {f} give equal outputs"


@pytest.mark.parametrize("name", ["mmoe", "cgc", "ple2", "ple3"])
def test_task_gates_start_different(name, build_arch) -> None:
    """Per-task gates that start equal route every task alike until the towers pull them apart."""
    model = build_arch(name)
    groups = [list(model.gates.values())] if name == "mmoe" else [list(level.task_gates) for level in model.levels]
    for gates in groups:
        for g, h in itertools.combinations(gates, 2):
            assert _min_gap(g.linear.weight, h.linear.weight) > 1e-3


@pytest.mark.parametrize("name", list(ARCH_FACTORIES))
def test_towers_start_different(name, build_arch, get_tower) -> None:
    """Every pair of task towers differs in every layer whose shapes match (heads of 1-logit tasks
    included)."""
    model = build_arch(name)
    towers = [get_tower(model, t) for t in TASKS]
    for a, b in itertools.combinations(towers, 2):
        compared = 0
        for pa, pb in zip(a.parameters(), b.parameters()):
            if pa.shape == pb.shape:
                assert _min_gap(pa, pb) > 1e-3, f"{name}: two towers start with equal {tuple(pa.shape)} weights"
                compared += 1
        assert compared >= 2  # at least the body's first linear (weight + bias)


# -- (b) dropout: on in training, off at evaluation ------------------------------------------------
P = 0.5
DROPOUT_FACTORIES = {
    "single_task": lambda s, enc, d: SingleTask(s, enc, hidden_units=(16,), tower_units=(8,), dropout=d),
    "shared_bottom": lambda s, enc, d: SharedBottom(s, enc, bottom_units=(16, 12), tower_units=(8,), dropout=d),
    "cross_stitch": lambda s, enc, d: CrossStitch(s, enc, column_units=(16, 12), tower_units=(8,), dropout=d),
    "omoe": lambda s, enc, d: OMoE(s, enc, num_experts=3, expert_units=(12,), tower_units=(8,), dropout=d),
    "mmoe": lambda s, enc, d: MMoE(s, enc, num_experts=3, expert_units=(16, 12), tower_units=(8,), dropout=d),
    "cgc": lambda s, enc, d: CGC(s, enc, specific_experts=2, shared_experts=2, expert_units=(12,), dropout=d),
    "ple1": lambda s, enc, d: PLE(s, enc, num_levels=1, specific_experts=2, shared_experts=2, expert_units=(12,), dropout=d),
    "ple2": lambda s, enc, d: PLE(s, enc, num_levels=2, specific_experts=2, shared_experts=2, expert_units=(12,), dropout=d),
    "ple3": lambda s, enc, d: PLE(s, enc, num_levels=3, specific_experts=1, shared_experts=2, expert_units=(12,), dropout=d),
}


def test_dropout_factories_cover_every_architecture() -> None:
    assert set(DROPOUT_FACTORIES) == set(ARCH_FACTORIES)


def _build(name: str, pre, dropout: float, seed: int = 0):
    torch.manual_seed(seed)
    return DROPOUT_FACTORIES[name](pre.fitted_schema, build_encoder(pre, embedding_dim=4), dropout)


@pytest.mark.parametrize("name", list(DROPOUT_FACTORIES))
def test_dropout_reaches_every_block(name, tiny_preprocessed) -> None:
    """``dropout=`` is handed to every hidden block: each ExpertLayer and each non-empty MLP holds
    an ``nn.Dropout(p)``; with ``dropout=0`` there is none at all."""
    pre, _ = tiny_preprocessed
    model = _build(name, pre, P)
    blocks = [m for m in model.modules() if isinstance(m, ExpertLayer) or (isinstance(m, MLP) and len(m))]
    assert blocks
    for block in blocks:
        drops = [m for m in block.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(d.p == P for d in drops), f"{name}: {type(block).__name__} has no dropout {P}"
    assert not any(isinstance(m, nn.Dropout) for m in _build(name, pre, 0.0).modules())
    # ... and each block applies it: on a fixed input, train passes differ and zero out more
    # activations than the eval pass, which is repeatable
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in blocks:
            in_dim = block.weights[0].shape[1] if isinstance(block, ExpertLayer) else block[0].in_features
            x = torch.randn(64, in_dim, generator=g)
            block.eval()
            e1, e2 = block(x), block(x)
            block.train()
            t1, t2 = block(x), block(x)
            assert torch.equal(e1, e2)
            assert _min_gap(t1, t2) > 1e-3, f"{name}: a {type(block).__name__} does not apply its dropout"
            assert (t1 == 0).float().mean() > (e1 == 0).float().mean() + 0.05


@pytest.mark.parametrize("name", list(DROPOUT_FACTORIES))
def test_dropout_on_in_train_off_in_eval(name, tiny_preprocessed, tiny_batch) -> None:
    """eval(): repeated passes are identical and equal the same weights without dropout;
    train(): two passes differ for every task, and differ from the eval output."""
    pre, _ = tiny_preprocessed
    model = _build(name, pre, P)
    plain = _build(name, pre, 0.0)
    with torch.no_grad():
        # same weights, copied in order (dropout shifts nn.Sequential indices, so no load_state_dict)
        for p, q in zip(plain.parameters(), model.parameters(), strict=True):
            assert p.shape == q.shape
            p.copy_(q)
        model.eval(), plain.eval()
        a, b, ref = model(tiny_batch).logits, model(tiny_batch).logits, plain(tiny_batch).logits
        for t in TASKS:
            assert torch.equal(a[t], b[t]), f"{name}/{t}: eval passes differ"
            assert torch.equal(a[t], ref[t]), f"{name}/{t}: eval output is not the dropout-free output"
        model.train()
        torch.manual_seed(1)
        c, d = model(tiny_batch).logits, model(tiny_batch).logits
    for t in TASKS:
        assert _min_gap(c[t], d[t]) > 1e-3, f"{name}/{t}: train passes agree: no dropout reaches it"
        assert _min_gap(c[t], a[t]) > 1e-3, f"{name}/{t}: train pass equals eval pass"


def test_lightning_validate_runs_with_dropout_off(tiny_raw) -> None:
    """Trainer.validate on a module left in train mode: two validations give identical metrics, and
    they are the metrics of the eval-mode forward pass (not of a dropped-out one)."""
    dm = TabularDataModule(tiny_raw, batch_size=64, eval_batch_size=64, seed=0)
    dm.setup()
    torch.manual_seed(0)
    arch = DROPOUT_FACTORIES["ple2"](dm.schema, build_encoder(dm.preprocessor, embedding_dim=4), P)
    with torch.no_grad():  # weights far from init, so logits are large and dropout's effect plain
        for p in arch.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    module = MultiTaskModule(dm.schema, arch, FixedWeighting()).train()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    first = trainer.validate(module, datamodule=dm, verbose=False)[0]
    second = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert first == second

    val = dm.tables["val"]
    rows = val[torch.arange(len(val))]
    y = rows.labels["ctr"]
    with torch.no_grad():
        module.eval()
        eval_loss = float(F.binary_cross_entropy_with_logits(module(rows).logits["ctr"], y))
        module.train()
        torch.manual_seed(3)
        train_loss = float(F.binary_cross_entropy_with_logits(module(rows).logits["ctr"], y))
    assert first["val/ctr/logloss"] == pytest.approx(eval_loss, rel=1e-5)
    assert abs(train_loss - eval_loss) > 0.05 * eval_loss  # a dropped-out validation would show
