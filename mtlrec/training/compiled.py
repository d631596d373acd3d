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
eagerly, with its own warning. The first training epoch holds the compilation (and the one
recompilation for the last, smaller batch), so :class:`~mtlrec.training.timing.TrainThroughput`
leaves it out of the throughput of a compiled run.
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
    return torch.compile(model)
