"""Hand-made run folders with known metrics, laid out like Hydra multiruns (conftest exposes the fixture).

Every number the report prints is checked against values computed here independently, so the
fixtures must stay small and explicit: two architectures × three seeds, plus broken runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as sps

from mtlrec.training.results import write_json_atomic

# arch -> seed -> (test income auc, test income loss, val income auc)
KNOWN = {
    "mmoe": {0: (0.9512, 0.300, 0.950), 1: (0.9530, 0.290, 0.952), 2: (0.9521, 0.310, 0.951)},
    "shared_bottom": {0: (0.9401, 0.330, 0.941), 1: (0.9433, 0.320, 0.940), 2: (0.9390, 0.340, 0.943)},
}
MARITAL_AUC = {"mmoe": 0.99, "shared_bottom": 0.98}
PARAMS = {"mmoe": 12345, "shared_bottom": 6789}


def make_result(
    arch: str,
    seed: int,
    *,
    income_auc: float,
    income_loss: float,
    val_auc: float,
    extra_overrides: list[str] | None = None,
    status: str = "complete",
    config_hash: str | None = None,
    weights: list[dict[str, float]] | None = None,
    throughput: float = 1000.0,
) -> dict[str, Any]:
    """A format-1 ``results.json`` payload with the given metrics."""
    overrides = [f"arch={arch}", f"seed={seed}", *(extra_overrides or [])]
    return {
        "format": 1,
        "status": status,
        "error": None if status == "complete" else "CUDA out of memory\nTraceback...",
        "config": {"arch": arch, "seed": seed},
        "config_hash": config_hash or f"{arch}-{'-'.join(extra_overrides or [])}-{seed}",
        "overrides": overrides,
        "seed": seed,
        "main_task": "income",
        "selection": {"monitor": "val/income/auc", "mode": "max"},
        "git_commit": None,
        "versions": {},
        "num_parameters": PARAMS[arch],
        "best_epoch": 3,
        "metrics": {
            "val": {"income": {"auc": val_auc, "loss": income_loss + 0.01}, "marital": {"auc": MARITAL_AUC[arch]}},
            "test": {"income": {"auc": income_auc, "loss": income_loss}, "marital": {"auc": MARITAL_AUC[arch]}},
        },
        "timing": {"train_seconds": 10.0, "train_samples_per_second": throughput},
        "weights": {"final": (weights or [{}])[-1], "per_epoch": weights or []},
    }


def write_run(run_dir: Path, payload: dict[str, Any] | None, *, hydra: bool = True) -> Path:
    """A Hydra job folder: ``.hydra/overrides.yaml`` and (unless ``payload`` is None) ``results.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if hydra:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        overrides = payload["overrides"] if payload else ["arch=ple", "seed=0"]
        (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if payload is not None:
        write_json_atomic(run_dir / "results.json", payload)
    return run_dir


def two_factor_sweep(root: Path) -> None:
    """arch × data.correlation; shared_bottom loses more as correlation falls."""
    job = 0
    for corr in ("0.5", "1.0"):
        for arch in ("mmoe", "shared_bottom"):
            for seed in range(3):
                drop = 0.0 if arch == "mmoe" or corr == "1.0" else 0.02
                write_run(root / str(job), make_result(
                    arch, seed, income_auc=0.95 - drop + 0.001 * seed, income_loss=0.3 + drop + 0.002 * seed,
                    val_auc=0.95, extra_overrides=[f"data.correlation={corr}"]))
                job += 1


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's t and Welch–Satterthwaite degrees of freedom, two-sided p from the t distribution."""
    n1, n2 = len(a), len(b)
    m1, m2 = sum(a) / n1, sum(b) / n2
    v1 = sum((x - m1) ** 2 for x in a) / (n1 - 1)
    v2 = sum((x - m2) ** 2 for x in b) / (n2 - 1)
    se2 = v1 / n1 + v2 / n2
    t = (m1 - m2) / math.sqrt(se2)
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return 2 * sps.t.sf(abs(t), df)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """``multirun/arch``: 2 archs × 3 seeds complete, one failed run, one job that never wrote results."""
    root = tmp_path / "multirun" / "arch"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for arch, seeds in KNOWN.items():
        for seed, (auc, loss, val_auc) in seeds.items():
            weights = [{"income": 1.0 + 0.1 * e + 0.01 * seed, "marital": 1.0 - 0.1 * e} for e in range(3)]
            write_run(root / str(job), make_result(arch, seed, income_auc=auc, income_loss=loss, val_auc=val_auc,
                                                  weights=weights, throughput=1000.0 + 10 * seed))
            job += 1
    # A failed run with absurd metrics: must never enter a mean.
    write_run(root / str(job), make_result("mmoe", 3, income_auc=0.1, income_loss=9.0, val_auc=0.1,
                                           status="failed"))
    write_run(root / str(job + 1), None)  # crashed before writing results.json
    return root


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
