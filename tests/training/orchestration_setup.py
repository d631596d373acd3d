"""A tiny, deterministic, overfitting configuration for the orchestration tests.

64 training rows, 32 inputs, Adam at lr 0.03: on CPU, with seed 69, MMoE's validation MSE of
task1 is best at epoch 3 of 12 and rises after it, so choosing the best epoch, reloading it, and
resuming are all observable (with 2 epochs, as before, the best epoch was simply the last one).
With early stopping at patience 3, single_task's task1 network is best at epoch 3, task2's at 1,
and the run stops after epoch 6. (Seed 0 served until the input encoder was split out: the old
input layer drew an unused one-row embedding table even without categorical features, so every
later weight, and the curves, changed; with the new init seed 0's best epoch is 11 of 12.)
"""

from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from mtlrec import train
from tests.conftest import compose_task_config, make_tiny_raw

OVERFIT = [
    "data.num_train=64", "data.num_val=256", "data.num_test=256", "data.dim=32", "data.loader.batch_size=16",
    "optimizer.lr=0.03", "trainer.max_epochs=12", "callbacks.early_stopping.patience=12", "logger=csv", "seed=69",
]  # fmt: skip


def fit(output_dir: Path, *overrides: str, data: dict | None = None) -> dict:
    """Train one run in-process into ``output_dir`` (``OVERFIT`` + ``overrides``; ``data`` replaces
    the data node); returns its results record."""
    cfg = compose_task_config(output_dir, [*OVERFIT, *overrides])
    try:
        if data is not None:
            with open_dict(cfg):
                cfg.data = OmegaConf.create(data)
        return train.run(cfg, output_dir, list(overrides))
    finally:
        HydraConfig.instance().cfg = None


def val_history(output_dir: Path) -> pd.DataFrame:
    """Per-epoch validation metrics from the CSV log (the validate() after fit excluded)."""
    df = pd.read_csv(glob.glob(str(output_dir / "logs" / "metrics.csv"))[0])
    cols = [c for c in df.columns if c.startswith("val/")]
    rows = df.dropna(subset=cols, how="all")[["epoch", *cols]]
    return rows.iloc[:-1].reset_index(drop=True)  # the last row is validate() from the best checkpoint


def tiny_masked_data(seed: int = 0) -> object:
    """Hydra target: the conftest's tiny dataset (masked cvr/spend tasks, all task kinds)."""
    return make_tiny_raw(seed=seed)


def altered_test_labels(**kwargs) -> object:
    """Hydra target: the synthetic data with the *test* split's labels scrambled (val untouched)."""
    from mtlrec.data.synthetic import load_synthetic

    raw = load_synthetic(**kwargs)
    test = raw.splits["test"].copy()
    for task in raw.schema.tasks:
        test[task.label] = -3.0 * test[task.label].to_numpy()[::-1] + 5.0
    raw.splits["test"] = test
    return raw
