"""``results.json``: the one record a run leaves behind, and the only thing ``mtlrec-report`` reads.

Format (version 1)::

    {
      "format": 1,
      "status": "complete" | "failed",
      "error": null | "<message>",               # for failed runs
      "config": {...resolved Hydra config...},
      "config_hash": "<sha256 of the canonical JSON of the config, minus run-location keys>",
      "overrides": ["arch=mmoe", "seed=3", ...],   # Hydra task overrides (the swept factors)
      "seed": 3,
      "main_task": "income",
      "selection": {"monitor": "val/income/auc", "mode": "max", "per_task": false},
                                                    # per_task: independent networks, each selected
                                                    # on its own validation metric (single_task)
      "git_commit": "<sha or null>",
      "versions": {"python": ..., "torch": ..., "lightning": ..., "mtlrec": ...},
      "num_parameters": 12345,
      "best_epoch": 7,                              # the main task's best epoch (1-based)
      "best_epochs": {"income": 7, "marital": 7},   # per task: the epoch its weights come from
      "epochs_trained": 10,
      "checkpoint": "checkpoints/best.ckpt",        # relative to the run folder; best-per-task.ckpt
                                                    # for per-task selection; null when none was kept
      "dataset": "census_income_group1",
      "metrics": {"val": {"income": {"auc": 0.95, "logloss": 0.12}, ...},
                  "test": {...}},
      "timing": {"train_seconds": 61.2, "train_samples_per_second": 30000.0},
      "weights": {"final": {"income": 1.0, ...}, "per_epoch": [{"income": 1.0, ...}, ...]},
      "train_loss_per_epoch": [{"income": 0.2, ...}, ...]   # one entry per epoch trained
    }

Written atomically (temporary file in the same folder, then ``os.replace``) so a killed run leaves
either the old file or the complete new one, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
STACK_DIR = "stack"  # a stacked job's own folder (seeds=K): its checkpoints, never a run
FORMAT_VERSION = 1

# Keys (top-level or dotted) that say *where* a run or its data lives, or how it reports, not
# *what* it computes: they never change the config hash, so moving the data keeps results valid.
LOCATION_KEYS = (
    "paths",
    "hydra",
    "data.root",
    "data.download",
    "print_results",
    "console",
    "logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "callbacks.model_checkpoint.dirpath",
    "callbacks.last_checkpoint.dirpath",
    "data.loader.num_workers",
    "encoder.kinds.image.cache_dir",
    # in memory or from a memory-mapped cache: the same batches, so the same run
    "data.out_of_core",
)
# Keys added after runs were published, whose default computes what their absence did: left out
# of the hash while at that default (None: any empty value), so earlier runs keep their hash (and
# are skipped, not redone).
ABSENT_AT_DEFAULT = {"backbone": None, "data.split.val_share": None, "trainer.precision": "32-true",
                     "init_from": None, "finetune": {"freeze": [], "lr": None, "l2sp": None},
                     "data.categories": None, "data.shots": None, "data.shots_seed": 0, "backbone.augment": None,
                     "data.domain": None, "adapt": None, "label": None,
                     "insight": {"conflict_every": 0}, "compile": False, "optimizer.fused": True,
                     "seeds": 1, "data.loader.batches_per_epoch": None}


def is_location_key(key: str) -> bool:
    """True for an override key such as ``data.root`` or ``hydra.sweep.dir``."""
    return any(key == k or key.startswith(k + ".") for k in LOCATION_KEYS)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary sibling file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would outlive the rename
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of what a run computes (its resolved config without location keys)."""
    core = _without_keys(config, "")
    for dotted, default in ABSENT_AT_DEFAULT.items():
        *parents, last = dotted.split(".")
        node = core
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and (not node[last] if default is None else node[last] == default):
            node.pop(last)
    canonical = json.dumps(core, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def without_location_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus where-it-ran keys (what the hash covers; what an archive may publish)."""
    return _without_keys(config, "")


def _without_keys(node: Any, prefix: str) -> Any:
    if not isinstance(node, dict):
        return node
    return {k: _without_keys(v, f"{prefix}{k}.") for k, v in node.items() if not is_location_key(f"{prefix}{k}")}


def read_results(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's results, or ``None`` when absent or unreadable (e.g. a half-copied file)."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(run_dir: str | os.PathLike, expected_hash: str) -> bool:
    """True when ``run_dir`` already holds a complete result for exactly this config."""
    res = read_results(run_dir)
    return bool(res) and res.get("status") == "complete" and res.get("config_hash") == expected_hash


def _git(args: list[str], where: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _source_commit(where: Path) -> str | None:
    """HEAD of the checkout mtlrec was imported from, ``+dirty`` when its tracked files differ."""
    head = _git(["rev-parse", "HEAD"], where)
    if not head:
        return None
    dirty = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], where)
    return f"{head}+dirty" if dirty else head


# Read once, when mtlrec is imported: a long-lived sweep worker keeps the code it imported, so the
# commit at import time is the code that ran, even if HEAD moves during the sweep.
_IMPORT_COMMIT = _source_commit(Path(__file__).resolve().parents[2])


def git_commit() -> str | None:
    """The commit of the source tree this process imported mtlrec from (``None`` outside git)."""
    return _IMPORT_COMMIT
