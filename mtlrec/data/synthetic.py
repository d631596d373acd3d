"""The MMoE paper's synthetic two-task regression data with controlled task correlation.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018, §3.2: orthonormal u1, u2 ∈ R^d; w1 = c·u1, w2 = c·(p·u1 + sqrt(1−p²)·u2), so
cos(w1, w2) = p; x ~ N(0, I); y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε.
The MMoE paper leaves c, m, α, β unstated; we follow the PLE paper (Tang et al., RecSys 2020):
c = 1, m = 10, α_i, β_i ~ N(0, 1), shared by both tasks. ε ~ N(0, 0.01) is read as variance 0.01
(standard deviation 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec


@dataclass(frozen=True)
class SyntheticTaskWeights:
    """The generating vectors and sine parameters (kept so tests can check cos(w1, w2) = p)."""

    w1: np.ndarray
    w2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def make_task_weights(dim: int, correlation: float, scale: float, num_sines: int, rng: np.random.Generator):
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"data.correlation must lie in [-1, 1], got {correlation}")
    if dim < 2:
        raise ValueError(f"data.dim must be >= 2 to hold two orthogonal directions, got {dim}")
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))  # two orthonormal columns
    u1, u2 = q[:, 0], q[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    return SyntheticTaskWeights(w1, w2, rng.standard_normal(num_sines), rng.standard_normal(num_sines))


def generate(n: int, weights: SyntheticTaskWeights, noise_std: float, rng: np.random.Generator):
    """Inputs [n, d] and the two targets, each [n]."""
    x = rng.standard_normal((n, weights.w1.shape[0]))
    ys = []
    for w in (weights.w1, weights.w2):
        lin = x @ w
        waves = np.sin(np.outer(lin, weights.alpha) + weights.beta).sum(axis=1)
        ys.append(lin + waves + noise_std * rng.standard_normal(n))
    return x, ys[0], ys[1]


def load_synthetic(
    correlation: float = 0.5,
    dim: int = 100,
    num_train: int = 20_000,
    num_val: int = 5_000,
    num_test: int = 5_000,
    scale: float = 1.0,
    num_sines: int = 10,
    noise_std: float = 0.1,
    seed: int = 0,
) -> RawDataset:
    """Two regression tasks (``task1`` main, ``task2``) on ``dim`` numeric features.

    ``seed`` fixes the generating weights *and* the samples: runs of different architectures with
    the same seed see the same dataset, so their comparison is paired.
    """
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if value < 1:
            raise ValueError(f"data.{name} must be >= 1, got {value}")
    rng = np.random.default_rng(seed)
    weights = make_task_weights(dim, correlation, scale, num_sines, rng)
    columns = [f"x{i}" for i in range(dim)]
    splits = {}
    for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
        x, y1, y2 = generate(n, weights, noise_std, rng)
        frame = pd.DataFrame(x.astype(np.float32), columns=columns)
        frame["task1"], frame["task2"] = y1.astype(np.float32), y2.astype(np.float32)
        splits[split] = frame
    schema = Schema(
        features=tuple(FeatureSpec(c, "numeric") for c in columns),
        tasks=(TaskSpec("task1", "regression", "task1"), TaskSpec("task2", "regression", "task2")),
        main_task="task1",
    )
    return RawDataset(schema, splits, name=f"synthetic_p{correlation}")
