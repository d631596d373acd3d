import pytest
import torch
from weighting_helpers import (
    TASKS,
    CountingBackward,
    TinyMTL,
    assert_backward_is_plain_sum,
    grads_of,
    make_batch,
    reference_grads,
)  # the data-volume test still checks gradients by hand

from mtlrec.weighting.fixed import FixedWeighting


def test_equal_by_default_and_gradient_is_plain_sum():
    model, (x, ys) = TinyMTL(), make_batch()
    w = FixedWeighting()
    w.setup(TASKS, model.shared_model(), {"a": 10, "b": 10})
    assert w.weights() == {"a": 1.0, "b": 1.0}
    assert_backward_is_plain_sum(w, model, x, ys)


def test_by_data_volume_numbers():
    model, (x, ys) = TinyMTL(), make_batch()
    w = FixedWeighting(by_data_volume=True)
    w.setup(TASKS, model.shared_model(), {"a": 300, "b": 100})
    # T * n_k / sum n = 2 * 300/400, 2 * 100/400
    assert w.weights() == pytest.approx({"a": 1.5, "b": 0.5})
    assert sum(w.weights().values()) == pytest.approx(len(TASKS))
    ref = reference_grads(model, lambda m: (lambda L: 1.5 * L["a"] + 0.5 * L["b"])(m.losses(x, ys)))
    w.backward(model.losses(x, ys), CountingBackward())
    for n, g in grads_of(model).items():
        torch.testing.assert_close(g, ref[n])


def test_three_task_volume():
    w = FixedWeighting(by_data_volume=True)
    w.setup(["x", "y", "z"], TinyMTL().shared_model(), {"x": 1, "y": 1, "z": 2})
    assert w.weights() == pytest.approx({"x": 0.75, "y": 0.75, "z": 1.5})


def test_hand_set_weights_and_missing_default_to_one():
    w = FixedWeighting(weights={"b": 3.0})
    w.setup(TASKS, TinyMTL().shared_model(), {})
    assert w.weights() == {"a": 1.0, "b": 3.0}


def test_unknown_task_names_the_option_and_valid_tasks():
    w = FixedWeighting(weights={"ctr": 2.0})
    with pytest.raises(ValueError, match=r"weighting\.weights.*'ctr'.*\['a', 'b'\]"):
        w.setup(TASKS, TinyMTL().shared_model(), {})


def test_both_options_rejected():
    with pytest.raises(ValueError, match="not both"):
        FixedWeighting(weights={"a": 1.0}, by_data_volume=True)
