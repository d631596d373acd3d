import math

import pytest
import torch
from weighting_helpers import TASKS, CountingBackward, TinyMTL, grads_of, make_batch, reference_grads

from mtlrec.weighting.dwa import DWAWeighting


def _dwa(r, temperature):
    """Liu et al. 2019 eq. 7 written out: K exp(r_k/T) / sum_i exp(r_i/T)."""
    z = sum(math.exp(v / temperature) for v in r.values())
    return {k: len(r) * math.exp(v / temperature) / z for k, v in r.items()}


def test_equal_for_two_epochs_then_formula():
    w = DWAWeighting()  # T = 2
    w.setup(TASKS, TinyMTL().shared_model(), {})
    epochs = [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 1.8}, {"a": 0.45, "b": 0.9}]
    assert w.weights() == {"a": 1.0, "b": 1.0}  # epoch 1
    w.on_train_epoch_end(epochs[0])
    assert w.weights() == {"a": 1.0, "b": 1.0}  # epoch 2
    w.on_train_epoch_end(epochs[1])
    # epoch 3: r = (0.5/1.0, 1.8/2.0) = (0.5, 0.9)
    expected = _dwa({"a": 0.5, "b": 0.9}, 2.0)
    assert w.weights() == pytest.approx(expected, rel=1e-12)
    assert w.weights()["a"] == pytest.approx(0.9003320053750442, rel=1e-9)  # hand value
    assert sum(w.weights().values()) == pytest.approx(2.0)
    w.on_train_epoch_end(epochs[2])
    # epoch 4: r = (0.45/0.5, 0.9/1.8) = (0.9, 0.5): the slower task gets the larger weight
    expected = _dwa({"a": 0.9, "b": 0.5}, 2.0)
    assert w.weights() == pytest.approx(expected, rel=1e-12)
    assert w.weights()["a"] > 1.0 > w.weights()["b"]


def test_temperature_and_backward_uses_current_weights():
    model, (x, ys) = TinyMTL(), make_batch()
    w = DWAWeighting(temperature=0.5)
    w.setup(TASKS, model.shared_model(), {})
    w.on_train_epoch_end({"a": 2.0, "b": 1.0})
    w.on_train_epoch_end({"a": 1.0, "b": 1.0})
    wa, wb = w.weights()["a"], w.weights()["b"]
    assert (wa, wb) == pytest.approx(tuple(_dwa({"a": 0.5, "b": 1.0}, 0.5).values()))
    ref = reference_grads(model, lambda m: (lambda L: wa * L["a"] + wb * L["b"])(m.losses(x, ys)))
    w.backward(model.losses(x, ys), CountingBackward())
    for n, g in grads_of(model).items():
        torch.testing.assert_close(g, ref[n])


def test_state_survives_state_dict_round_trip():
    w = DWAWeighting()
    w.setup(TASKS, TinyMTL().shared_model(), {})
    for e in [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 1.8}]:
        w.on_train_epoch_end(e)
    w2 = DWAWeighting()
    w2.setup(TASKS, TinyMTL().shared_model(), {})
    w2.load_state_dict(w.state_dict())
    assert w2.weights() == w.weights()
    w.on_train_epoch_end({"a": 0.4, "b": 1.0})
    w2.on_train_epoch_end({"a": 0.4, "b": 1.0})
    assert w2.weights() == w.weights()
