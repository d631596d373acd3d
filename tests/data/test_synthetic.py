"""The MMoE paper's synthetic data: controlled task correlation and the generating formula."""

from __future__ import annotations

import numpy as np
import pytest

from mtlrec.data.synthetic import generate, load_synthetic, make_task_weights


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("p", [-1.0, -0.7, -0.2, 0.0, 0.3, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("dim", [2, 16, 100])
def test_cosine_of_task_weights_is_p(p: float, dim: int) -> None:
    w = make_task_weights(dim, p, scale=1.0, num_sines=10, rng=np.random.default_rng(dim))
    assert _cos(w.w1, w.w2) == pytest.approx(p, abs=1e-6)
    assert np.linalg.norm(w.w1) == pytest.approx(1.0, abs=1e-9)
    assert np.linalg.norm(w.w2) == pytest.approx(1.0, abs=1e-9)
    assert w.alpha.shape == w.beta.shape == (10,)


def test_scale_multiplies_both_vectors() -> None:
    w = make_task_weights(8, 0.4, scale=3.0, num_sines=4, rng=np.random.default_rng(0))
    assert np.linalg.norm(w.w1) == pytest.approx(3.0) and np.linalg.norm(w.w2) == pytest.approx(3.0)
    assert _cos(w.w1, w.w2) == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.5, 0.9])
def test_empirical_correlation_of_linear_parts(p: float) -> None:
    rng = np.random.default_rng(42)
    w = make_task_weights(20, p, scale=1.0, num_sines=10, rng=rng)
    x = rng.standard_normal((100_000, 20))
    corr = np.corrcoef(x @ w.w1, x @ w.w2)[0, 1]
    assert corr == pytest.approx(p, abs=0.01)


def test_generate_follows_the_formula() -> None:
    rng = np.random.default_rng(1)
    w = make_task_weights(10, 0.5, 1.0, 10, rng)
    x, y1, y2 = generate(5000, w, noise_std=0.1, rng=rng)
    assert x.shape == (5000, 10) and y1.shape == y2.shape == (5000,)
    for y, wk in ((y1, w.w1), (y2, w.w2)):
        lin = x @ wk
        clean = lin + np.sin(np.outer(lin, w.alpha) + w.beta).sum(axis=1)
        residual = y - clean
        assert residual.std() == pytest.approx(0.1, rel=0.05)
        assert abs(residual.mean()) < 0.01
    _, z1, _ = generate(10, w, noise_std=0.0, rng=np.random.default_rng(0))
    assert np.isfinite(z1).all()


def test_load_synthetic_dataset_shape_and_formula() -> None:
    raw = load_synthetic(correlation=0.8, dim=12, num_train=300, num_val=50, num_test=40, seed=5)
    assert {s: len(f) for s, f in raw.splits.items()} == {"train": 300, "val": 50, "test": 40}
    assert raw.schema.task_names == ["task1", "task2"] and raw.schema.main_task == "task1"
    assert [f.name for f in raw.schema.of_kind("numeric")] == [f"x{i}" for i in range(12)] and raw.schema.of_kind("categorical") == []
    assert all(t.kind == "regression" for t in raw.schema.tasks)
    assert raw.name == "synthetic_p0.8"
    # the generating weights are the first draw from the seeded generator
    w = make_task_weights(12, 0.8, 1.0, 10, np.random.default_rng(5))
    train = raw.splits["train"]
    x = train[[f"x{i}" for i in range(12)]].to_numpy(dtype=np.float64)
    for col, wk in (("task1", w.w1), ("task2", w.w2)):
        lin = x @ wk
        clean = lin + np.sin(np.outer(lin, w.alpha) + w.beta).sum(axis=1)
        assert (train[col].to_numpy() - clean).std() == pytest.approx(0.1, rel=0.2)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = load_synthetic(dim=5, num_train=50, num_val=10, num_test=10, seed=3)
    b = load_synthetic(dim=5, num_train=50, num_val=10, num_test=10, seed=3)
    c = load_synthetic(dim=5, num_train=50, num_val=10, num_test=10, seed=4)
    for split in ("train", "val", "test"):
        assert a.splits[split].equals(b.splits[split])
        assert not a.splits[split].equals(c.splits[split])
    assert not a.splits["train"].equals(a.splits["val"].reindex(range(50)))


def test_argument_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match=r"data.correlation must lie in \[-1, 1\], got 1.5"):
        load_synthetic(correlation=1.5)
    with pytest.raises(ValueError, match="data.dim must be >= 2"):
        load_synthetic(dim=1)
    with pytest.raises(ValueError, match="data.num_val must be >= 1, got 0"):
        load_synthetic(num_val=0)
