"""A run's trained image backbone as a file another run can start from.

A run that trains some of its image backbone writes the best checkpoint's convolutional base to
``backbone.pth`` in torchvision's layout (``features.<index>.<name>``). A target run reads it with
``backbone.weights_path=<run>/backbone.pth``, the same option that reads torchvision's ImageNet
file, so a transfer recipe runs unchanged with either source. This is what makes a *frozen*
source backbone transferable: frozen blocks are not in a model's state (their output is cached),
so ``init_from`` alone cannot carry them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

BACKBONE_FILE = "backbone.pth"


def trained_backbone(architecture: nn.Module, main_task: str) -> dict[str, torch.Tensor] | None:
    """The convolutional base of the first image input that trained its backbone (the main task's
    network, when each task has its own); ``None`` when no backbone was trained."""
    networks = architecture.task_networks() if hasattr(architecture, "task_networks") else None
    root = networks[main_task] if networks and main_task in networks else architecture
    for module in root.modules():
        export = getattr(module, "exported_backbone", None)
        state = export() if export is not None else None
        if state is not None:
            return state
    return None


def save_trained_backbone(architecture: nn.Module, main_task: str, run_dir: str | os.PathLike) -> Path | None:
    """Write ``run_dir/backbone.pth`` atomically (a temporary file renamed into place)."""
    state = trained_backbone(architecture, main_task)
    if state is None:
        return None
    path = Path(run_dir) / BACKBONE_FILE
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".backbone-", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
