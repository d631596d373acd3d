from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchjd.aggregation import MGDA, NashMTL, PCGrad, UPGrad
from weighting_helpers import TASKS, CountingBackward, TinyMTL, assert_backward_is_plain_sum, make_batch

from mtlrec.weighting.aggregation import AggregationWeighting
from mtlrec.weighting.base import SharedModel

CONF = Path(__file__).resolve().parents[2] / "conf" / "weighting"


class LinearPair(nn.Module):
    """L_k = g_k·θ + c_k·h_k: the Jacobian w.r.t. the shared θ has rows g_1, g_2 exactly,
    and the task parameter h_k has gradient c_k."""

    def __init__(self, g1, g2, c=(3.0, -2.0)):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        # h = 1 so that no loss is exactly 0 (which would mean "no labelled rows in the batch")
        self.h = nn.ParameterDict({t: nn.Parameter(torch.ones(1, dtype=torch.float64)) for t in TASKS})
        self.g = {"a": torch.tensor(g1, dtype=torch.float64), "b": torch.tensor(g2, dtype=torch.float64)}
        self.c = dict(zip(TASKS, c))

    def shared(self):
        return SharedModel([self.theta], [self.theta], [self.h[t] for t in TASKS])

    def losses(self):
        return {t: self.g[t] @ self.theta + self.c[t] * self.h[t].sum() for t in TASKS}


def _run(agg, g1, g2):
    m = LinearPair(g1, g2)
    w = AggregationWeighting(aggregator=agg)
    w.setup(TASKS, m.shared(), {})
    bw = CountingBackward()
    w.backward(m.losses(), bw)
    assert bw.calls == 1
    return m, w


def test_pcgrad_textbook_projection():
    g1, g2 = [2.0, 1.0], [-1.0, 1.0]  # g1·g2 = −1 < 0: conflicting
    # g1' = g1 − (g1·g2/|g2|²) g2 = (2,1) + ½(−1,1) = (1.5, 1.5)
    # g2' = g2 − (g1·g2/|g1|²) g1 = (−1,1) + ⅕(2,1) = (−0.6, 1.2);  sum = (0.9, 2.7)
    m, _ = _run(PCGrad(), g1, g2)
    torch.testing.assert_close(m.theta.grad, torch.tensor([0.9, 2.7], dtype=torch.float64))
    # task-specific parameters: plain gradient of Σ L_k
    assert m.h["a"].grad.item() == pytest.approx(3.0) and m.h["b"].grad.item() == pytest.approx(-2.0)


def test_pcgrad_without_conflict_is_the_sum():
    m, _ = _run(PCGrad(), [2.0, 1.0], [1.0, 1.0])
    torch.testing.assert_close(m.theta.grad, torch.tensor([3.0, 2.0], dtype=torch.float64))


def test_mgda_min_norm_point():
    # two-gradient closed form of the min-norm point d = γg1 + (1−γ)g2:
    # γ = clip((g2−g1)·g2 / |g1−g2|², 0, 1)
    g1, g2 = [3.0, 1.0], [1.0, 3.0]
    # γ = ((1,3)−(3,1))·(1,3)/|(2,−2)|² = (−2+6)/8 = ½ → d = (2, 2)
    m, w = _run(MGDA(epsilon=1e-8, max_iters=1000), g1, g2)
    torch.testing.assert_close(m.theta.grad, torch.tensor([2.0, 2.0], dtype=torch.float64), atol=1e-4, rtol=0)
    assert w.weights() == pytest.approx({"a": 0.5, "b": 0.5}, abs=1e-4)


def test_grads_accumulate_into_existing_grad():
    pre = torch.tensor([10.0, -5.0], dtype=torch.float64)
    m = LinearPair([2.0, 1.0], [-1.0, 1.0])
    m.theta.grad = pre.clone()
    m.h["a"].grad = torch.tensor([1.0], dtype=torch.float64)
    w = AggregationWeighting(aggregator=PCGrad())
    w.setup(TASKS, m.shared(), {})
    w.backward(m.losses(), CountingBackward())
    torch.testing.assert_close(m.theta.grad, pre + torch.tensor([0.9, 2.7], dtype=torch.float64))
    assert m.h["a"].grad.item() == pytest.approx(4.0)


def test_empty_shared_reduces_to_plain_sum():
    model, (x, ys) = TinyMTL(), make_batch()
    shared = SharedModel([], [], model.shared_model().task_parameters)
    w = AggregationWeighting(aggregator=UPGrad())
    w.setup(TASKS, shared, {})
    assert_backward_is_plain_sum(w, model, x, ys)


def test_nashmtl_factory_gets_n_tasks_and_is_reset():
    cfg = OmegaConf.load(CONF / "nashmtl.yaml")
    w = instantiate(cfg)
    m = LinearPair([2.0, 1.0], [-1.0, 1.0])
    w.setup(TASKS, m.shared(), {})
    assert isinstance(w.aggregator, NashMTL) and w.aggregator.n_tasks == 2
    w.backward(m.losses(), CountingBackward())
    assert w.aggregator.weighting.step == 1
    w.setup(TASKS, m.shared(), {})  # a new run: state reset
    assert w.aggregator.weighting.step == 0
    # its weights equal a fresh NashMTL's on the same Jacobian
    m.theta.grad = None
    w.backward(m.losses(), CountingBackward())
    expected = NashMTL(n_tasks=2)(torch.tensor([[2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(m.theta.grad, expected)
