"""Score new data with a finished run: its schema, fitted preprocessing and best checkpoint.

    scorer = RunScorer("outputs/2026-11-29/12-00-00")
    scores = scorer.predict(new_frame)   # {"income": probabilities, "marital": probabilities}

New data goes through the preprocessing fit on the run's training split (unseen categories map to
the out-of-vocabulary id); label columns are not needed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from mtlrec.build import build_architecture
from mtlrec.data.datamodule import PREPROCESSOR_FILE, SCHEMA_FILE
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture
from mtlrec.training.objectives import objective_for
from mtlrec.training.results import read_results

_PREFIX = "architecture."  # where MultiTaskModule keeps the architecture's weights


class RunScorer:
    """A trained architecture plus the preprocessing it was trained with."""

    def __init__(self, run_dir: str | Path, device: str = "cpu"):
        run_dir = Path(run_dir)
        record = read_results(run_dir)
        if not record or record.get("status") != "complete" or not record.get("checkpoint"):
            raise FileNotFoundError(
                f"{run_dir}: no complete results.json with a checkpoint; train the run to completion first"
            )
        self.schema = Schema.from_dict(json.loads((run_dir / SCHEMA_FILE).read_text()))
        self.preprocessor = Preprocessor.load(run_dir / PREPROCESSOR_FILE, self.schema)
        config = OmegaConf.create(record["config"])
        self.architecture: Architecture = build_architecture(config, self.schema, self.preprocessor)
        checkpoint = Path(record["checkpoint"])
        state = torch.load(run_dir / checkpoint if not checkpoint.is_absolute() else checkpoint,
                           map_location=device, weights_only=False)["state_dict"]
        self.architecture.load_state_dict({k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)})
        self.architecture.to(device).eval()
        self.device = device
        self.objectives = {t.name: objective_for(t) for t in self.schema.tasks}

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame, batch_size: int = 16384) -> dict[str, np.ndarray]:
        """Per task: probabilities (binary: [N], multiclass: [N, C]) or values (regression)."""
        table = self.preprocessor.transform(frame, split="data to score", with_labels=False)
        parts: dict[str, list[torch.Tensor]] = {t: [] for t in self.objectives}
        for start in range(0, len(table), batch_size):
            batch = table[slice(start, start + batch_size)].to(self.device)
            logits = self.architecture(batch).logits
            for task, objective in self.objectives.items():
                parts[task].append(objective.predict(logits[task]).cpu())
        return {t: torch.cat(p).numpy() if p else np.empty(0) for t, p in parts.items()}


def run_split(config: dict, split: str) -> pd.DataFrame:
    """The raw rows of ``split`` that a run with this config was evaluated on (its ``data`` config;
    the run's seed only orders training batches), loaded once for all the runs of one dataset:
    what ``mtlrec-fuse`` and ``mtlrec-explain`` score. A shallow copy, so callers may add columns."""
    return _split_frames(json.dumps({"data": config["data"]}, sort_keys=True, default=str))[split].copy(deep=False)


@lru_cache(maxsize=2)
def _split_frames(data: str) -> dict[str, pd.DataFrame]:
    from mtlrec.build import build_datamodule

    datamodule = build_datamodule(OmegaConf.create({**json.loads(data), "seed": 0}))
    raw = getattr(datamodule, "raw", None)
    if raw is None or not getattr(raw, "splits", None):
        raise ValueError("data: this run's data gives no frames in memory (a columnar cache?); score runs whose data "
                         "loads into memory")
    return dict(raw.splits)
