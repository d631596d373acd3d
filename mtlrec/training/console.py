"""What a run shows on the terminal: a header, a throttled progress bar, and no dependency noise.

The progress bar is on by default only where a person is watching: stderr is a terminal, the run
is not one job of a sweep (``-m``), and the ``CI`` environment variable is unset. Lightning's own
info lines (accelerator banner, tips, checkpoint-restoring notices) and dependencies' deprecation
warnings say nothing about the run, so the CLI hides them (``console.quiet_third_party=false``
shows them again); mtlrec's header says what is trained on which data and device instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

#: Messages (regular expressions) of dependency warnings that tell an mtlrec user nothing.
_NOISE = (
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*`weights_only` was not set.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*does not have many workers which may be a bottleneck.*",  # batches are gathered in-process
    r".*You are using `torch.load` with `weights_only=False`.*",
)
_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def progress_bar_wanted(setting: Any, multirun: bool) -> bool:
    """``auto``: on for an interactive single run, off in sweeps, under CI and when piped."""
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() != "auto":
        raise ValueError(f"console.progress_bar={setting!r}: use auto, true or false")
    return sys.stderr.isatty() and not os.environ.get("CI") and not multirun


def quiet_third_party() -> None:
    """Hide dependencies' tips, info banners and deprecation warnings (mtlrec's own stay)."""
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for category in (DeprecationWarning, FutureWarning):
        # attributed to a dependency's module (mtlrec's own, and the user's script, still show)
        warnings.filterwarnings("ignore", category=category, module=r"(?!mtlrec|__main__)")
    for name in _INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def header(arch: str, weighting: str, dataset: str, rows: dict[str, int], tasks: list[str], main_task: str,
           monitor: str, per_task: bool, parameters: int, max_epochs: int, device: str, output_dir: str) -> str:
    """Two or three lines saying what is about to be trained, on what, and where it goes."""
    sizes = " / ".join(f"{split} {n:,}" for split, n in rows.items())
    chosen = "each task on its own validation metric" if per_task else f"{monitor}"
    return (
        f"mtlrec: {arch} ({parameters:,} parameters) with {weighting} on {dataset} ({sizes} rows), {device}\n"
        f"  tasks: {', '.join(t + (' (main)' if t == main_task else '') for t in tasks)}; "
        f"selection: {chosen}; at most {max_epochs} epochs\n"
        f"  output: {output_dir}"
    )
