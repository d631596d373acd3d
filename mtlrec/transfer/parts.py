"""Fine-tuning by part: freeze some of a model's parts and give others their own learning rate.

The parts are the architecture's own declaration (:meth:`~mtlrec.models.base.Architecture.parts`:
``embeddings``, ``backbone``, ``bottom``, ``gates``, ``towers``), never a match on class or
parameter names here, so every architecture, and a user's own, takes the same options:

    mtlrec-train init_from=runs/source finetune.freeze=[embeddings] 'finetune.lr={bottom: 1.0e-4}'

A frozen part's parameters stop requiring gradients before the module is built, so the
weighting never counts them as shared parameters and the optimizer never sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtlrec.models.base import PARTS, Architecture


def _check_names(names, option: str) -> None:
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise ValueError(f"{option}: unknown part(s) {unknown}; the parts are {', '.join(PARTS)}")


def freeze(architecture: Architecture, parts: Sequence[str]) -> int:
    """Stop training ``parts``; returns how many parameters (elements) were frozen."""
    _check_names(parts, "finetune.freeze")
    declared = architecture.parts()
    frozen = 0
    for part in parts:
        for param in declared[part]:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def part_options(architecture: Architecture, lr: Mapping[str, Any]) -> dict[int, dict[str, float]]:
    """``id(parameter) -> {"lr": x}`` for the parts given their own learning rate."""
    _check_names(lr, "finetune.lr")
    declared = architecture.parts()
    options: dict[int, dict[str, float]] = {}
    for part, rate in lr.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"finetune.lr.{part}={rate}: a learning rate must be a number above 0")
        options.update({id(p): {"lr": float(rate)} for p in declared[part]})
    return options

