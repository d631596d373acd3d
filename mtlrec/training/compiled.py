"""``compile=true``: the architecture's training forward through ``torch.compile``.

Only the training forward is compiled. Evaluation stays eager because it reads the experts through
forward hooks added for one batch (:class:`~mtlrec.insight.gates.ExpertCapture`), which a
compiled graph would not see, and because its larger batches and ``no_grad`` would each cost a
graph of their own for a pass that is a small part of a run. The parameters are the module's own
(``torch.compile`` wraps the module without copying it), so the optimizer, checkpoints and
``state_dict`` names are unchanged.

Where ``torch.compile`` cannot work, the run trains eagerly after one warning that names why: a
Python that TorchDynamo does not support, or a CPU run without the C++ compiler Inductor needs.
Where a graph fails to compile at run time, TorchDynamo's ``suppress_errors`` runs that frame
eagerly, with its own warning. Only batches of the first batch's size go through the compiled
graph: an epoch's last, smaller batch runs eagerly (:class:`FullBatches`). The first training
epoch holds the compilation, so :class:`~mtlrec.training.timing.TrainThroughput` leaves it out of
the throughput of a compiled run.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable

import torch
from torch import nn


def unsupported_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here, or ``None``."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl")):
        return "Inductor needs a C++ compiler on CPU and none was found on PATH (install g++ or clang++)"
    return None


def compiled_forward(model: nn.Module, device: torch.device) -> Callable:
    """``model`` compiled, or ``model`` itself (after a warning) where compilation cannot work."""
    reason = unsupported_reason(device)
    if reason is not None:
        warnings.warn(f"compile=true: {reason}; training runs eagerly", stacklevel=2)
        return model
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
    return FullBatches(model, torch.compile(model))


class FullBatches:
    """``compiled`` for batches of the first batch's size, ``model`` itself for any other.

    Why: a second batch size makes TorchDynamo compile the model again, with a dynamic batch
    dimension, for what is one batch per epoch (an epoch's remainder). On the Census table's MMoE
    (batch 4096, remainder 2,915 rows), a run's compiling first epoch took 4.3-4.5 s with it and
    3.0-3.3 s without (warm caches, two runs each).
    """

    def __init__(self, model: nn.Module, compiled: Callable) -> None:
        self.model, self.compiled = model, compiled
        self.rows: int | None = None  # the batch size the compiled graph is for

    def __call__(self, batch):
        if self.rows is None:
            self.rows = len(batch)
        return (self.compiled if len(batch) == self.rows else self.model)(batch)
