"""Gradient aggregation at the shared representation (``level="representation"``): the Jacobian is
taken over the encoder's output z and the shared layers above it, never over the encoder's own
parameters, and the aggregated z-direction reaches the encoder through one backward pass. With a
linear aggregator (the mean of the rows) this is exactly the parameter-level update."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import Mean, UPGrad

from mtlrec.training.module import MultiTaskModule
from mtlrec.weighting.aggregation import AggregationWeighting


def _gradients(model, batch, level, aggregator) -> dict[str, torch.Tensor]:
    weighting = AggregationWeighting(aggregator=aggregator, level=level)
    module = MultiTaskModule(model.task_schema, model, weighting)
    model.zero_grad(set_to_none=True)
    outputs = model(batch)
    weighting.backward(module.task_losses(outputs, batch), lambda loss, **kw: loss.backward(**kw),
                       features=outputs.features)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def model_and_batch(build_arch, tiny_preprocessed, tiny_batch):
    model = build_arch("mmoe")
    model.task_schema = tiny_preprocessed[0].fitted_schema
    return model, tiny_batch


def test_with_the_mean_of_the_rows_both_levels_give_the_same_update(model_and_batch) -> None:
    model, batch = model_and_batch
    at_parameters = _gradients(model, batch, "parameters", Mean())
    at_representation = _gradients(model, batch, "representation", Mean())
    assert at_parameters.keys() == at_representation.keys()
    assert any(n.startswith("encoder.") for n in at_parameters)  # the embeddings are below z
    for name, grad in at_parameters.items():
        torch.testing.assert_close(at_representation[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_the_jacobian_never_spans_the_encoder_parameters(model_and_batch) -> None:
    model, batch = model_and_batch
    widths = []

    class Recording(UPGrad):
        def forward(self, matrix):
            widths.append(matrix.shape)
            return super().forward(matrix)

    grads = _gradients(model, batch, "representation", Recording())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    above = sum(p.numel() for n, p in model.named_parameters() if n.startswith("experts."))
    z = model.encoder(batch)
    assert widths == [torch.Size([len(model.task_names), z.numel() + above])]
    assert encoder > 0 and all(n in grads for n, _ in model.encoder.named_parameters(prefix="encoder"))


def test_the_encoder_gets_the_aggregated_direction_chained_through_z(model_and_batch) -> None:
    model, batch = model_and_batch
    directions = []

    class Recording(UPGrad):
        def forward(self, matrix):
            out = super().forward(matrix)
            directions.append(out.detach())
            return out

    grads = _gradients(model, batch, "representation", Recording())
    z = model.encoder(batch)
    g_z = directions[0][: z.numel()].view_as(z)
    expected = torch.autograd.grad(z, list(model.encoder.parameters()), grad_outputs=g_z)
    for (name, _), want in zip(model.encoder.named_parameters(prefix="encoder"), expected):
        torch.testing.assert_close(grads[name], want, msg=name)


def test_an_unknown_level_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match="weighting.level must be parameters or representation"):
        AggregationWeighting(aggregator=UPGrad(), level="features")


def test_without_anything_trainable_below_z_it_aggregates_over_the_parameters(model_and_batch) -> None:
    model, batch = model_and_batch
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    at_parameters = _gradients(model, batch, "parameters", UPGrad())
    at_representation = _gradients(model, batch, "representation", UPGrad())
    for name, grad in at_parameters.items():
        torch.testing.assert_close(at_representation[name], grad, msg=name)
