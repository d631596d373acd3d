"""L2-SP: Ω = α/2‖w_S − w⁰_S‖² + β/2‖w_N‖² against a hand computation, its gradient, a pull toward
w⁰ (not toward zero) on the transferred rows of a remapped table, and a run that trains with it and
replaces weight decay on the parameters it covers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrec.transfer.init_from import initialise_from
from mtlrec.transfer.l2sp import L2SP
from tests.conftest import train_in_process
from tests.transfer.test_init_from import _domain, _module, source  # noqa: F401  (the source run fixture)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(4, 2)
        self.head = nn.Linear(2, 1)


def _l2sp(alpha=0.3, beta=0.1):
    torch.manual_seed(0)
    model = Tiny()
    report = {"loaded": ["architecture.head.weight"], "remapped_rows": {"architecture.table.weight": [0, 2]}}
    return model, L2SP(model, report, alpha=alpha, beta=beta)


def test_the_penalty_and_its_gradient_equal_the_hand_computation() -> None:
    model, l2sp = _l2sp()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    t, h, b = model.table.weight, model.head.weight, model.head.bias
    expected = (0.3 / 2 * (((t - w0["table.weight"])[[0, 2]] ** 2).sum() + ((h - w0["head.weight"]) ** 2).sum())
                + 0.1 / 2 * ((t[[1, 3]] ** 2).sum() + (b ** 2).sum()))
    assert torch.allclose(l2sp.penalty(), expected)
    l2sp.add_gradient()
    grad_t = torch.where(torch.tensor([True, False, True, False])[:, None], 0.3 * (t - w0["table.weight"]), 0.1 * t)
    assert torch.allclose(t.grad, grad_t) and torch.allclose(h.grad, 0.3 * (h - w0["head.weight"]))
    assert torch.allclose(b.grad, 0.1 * b)
    model.zero_grad()
    penalty = l2sp.penalty()
    penalty.backward()  # autograd agrees with the closed form
    assert torch.allclose(t.grad, grad_t)


def test_the_pull_is_toward_the_source_weights_not_zero() -> None:
    model, l2sp = _l2sp(alpha=1.0, beta=0.0)
    w0 = model.head.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    for _ in range(30):
        optimizer.zero_grad()
        l2sp.add_gradient()
        optimizer.step()
    assert torch.allclose(model.head.weight, w0, atol=1e-6) and w0.abs().sum() > 0.1


def test_a_run_with_l2sp_trains_and_drops_weight_decay_where_it_applies(source, tmp_path) -> None:  # noqa: F811
    root, run = source
    target = _domain(tmp_path / "data", ["b", "c", "z"], seed=4)
    options = [f"init_from={run}", "finetune.l2sp={alpha: 0.1, beta: 0.01}", "optimizer.weight_decay=0.001"]
    record, _ = train_in_process(tmp_path / "run", [*target, *options])
    assert record["status"] == "complete" and "remapped_rows" not in record["init_from"]
    module, datamodule = _module([*target, "optimizer.weight_decay=0.001"])
    module.l2sp = L2SP(module.architecture, initialise_from(module, datamodule.preprocessor, run), 0.1, 0.01)
    groups = module.configure_optimizers().param_groups
    assert all(g["weight_decay"] == 0.0 for g in groups)  # Ω covers every trained parameter here
    assert sum(len(g["params"]) for g in groups) == len(list(module.architecture.parameters()))
    with pytest.raises(ValueError, match="finetune.l2sp pulls toward the source weights: it needs init_from"):
        train_in_process(tmp_path / "run2", [*target, "finetune.l2sp={alpha: 0.1, beta: 0.01}"])


def test_overrides_merge_with_a_submodule_s_own_options() -> None:
    """L2-SP's weight_decay=0 must not drop an image backbone's own learning rate."""
    from mtlrec.training.module import parameter_groups

    model = Tiny()
    model.table.optimizer_options = {"lr": 1e-4}
    groups = parameter_groups(model, {id(p): {"weight_decay": 0.0} for p in model.parameters()})
    table = next(g for g in groups if any(p is model.table.weight for p in g["params"]))
    assert table["lr"] == 1e-4 and table["weight_decay"] == 0.0
    plain = parameter_groups(model)  # without overrides: the layout of earlier versions
    assert [len(g["params"]) for g in plain] == [2, 1] and plain[1]["lr"] == 1e-4
