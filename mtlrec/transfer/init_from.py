"""``init_from=<run dir or checkpoint>``: start a target model from a source run's weights.

Every parameter (and buffer) whose name and shape match is copied. Embedding tables are not
matched by shape: source and target vocabularies differ (a category seen in one domain only), so
a copy by position would give a category another category's vector. They are remapped row by row
through the two saved vocabularies: a category both domains know keeps its learned vector, a new
one keeps its fresh initialisation. What was loaded, remapped, skipped (and why) and left new is
printed in one summary line and stored in results.json under ``init_from``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtlrec.data.datamodule import PREPROCESSOR_FILE, SCHEMA_FILE
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import Schema

# The model's weights; the weighting's state (learned task weights, GradNorm's initial losses)
# belongs to the source's tasks and losses, and starts afresh.
TRANSFERRED = "architecture."


class TransferError(ValueError):
    """The source cannot initialise this model; the message names ``init_from`` and the fix."""


def source_files(given: str | Path) -> tuple[Path, Path]:
    """(the checkpoint, the run folder) of a run folder or a checkpoint file."""
    path = Path(given).expanduser()
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, run_dir
    if not path.is_dir():
        raise TransferError(f"init_from={given}: no such run folder or checkpoint file")
    record_file = path / "results.json"
    if record_file.is_file():
        checkpoint = json.loads(record_file.read_text()).get("checkpoint")
        if checkpoint and (path / checkpoint).is_file():
            return path / checkpoint, path
    for name in ("best.ckpt", "last.ckpt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name, path
    raise TransferError(f"init_from={given}: the folder holds no checkpoint (checkpoints/best.ckpt or last.ckpt); "
                        f"point it at a finished run of mtlrec-train")


def _source_preprocessor(run_dir: Path) -> Preprocessor | None:
    try:
        schema = Schema.from_dict(json.loads((run_dir / SCHEMA_FILE).read_text()))
        return Preprocessor.load(run_dir / PREPROCESSOR_FILE, schema)
    except (OSError, ValueError):
        return None


def vocabulary_tables(module: nn.Module, preprocessor: Preprocessor) -> dict[str, tuple[str, Any]]:
    """Parameter name -> (the preprocessing key, its transformer), for every embedding table whose
    rows are a vocabulary (the input layers that declare ``vocabulary_table``)."""
    names = {id(p): n for n, p in module.named_parameters()}
    tables = {}
    for sub in module.modules():
        layers = getattr(sub, "layers", None)
        keys = getattr(sub, "keys", None)
        if not isinstance(layers, nn.ModuleDict) or not isinstance(keys, list):
            continue
        for key, layer in zip(keys, layers.values(), strict=False):
            table = getattr(layer, "vocabulary_table", None)
            if table is not None and key in preprocessor.transformers and id(table) in names:
                tables[names[id(table)]] = (key, preprocessor.transformers[key])
    return tables


def row_map(target: Any, source: Any) -> np.ndarray | None:
    """For each row of the target's table, the source's row with the same meaning, or -1."""
    if hasattr(target, "row_keys") and hasattr(source, "row_keys"):
        source_rows = {key: row for row, key in enumerate(source.row_keys())}
        return np.array([source_rows.get(key, -1) for key in target.row_keys()], dtype=np.int64)
    return None


def initialise_from(module: nn.Module, preprocessor: Preprocessor, given: str | Path) -> dict[str, Any]:
    """Copy the source's matching weights into ``module`` (the training module); the report."""
    checkpoint, run_dir = source_files(given)
    try:
        source_state: Mapping[str, Tensor] = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    except Exception as err:  # a damaged or foreign file
        raise TransferError(f"init_from={given}: {checkpoint} is not a readable mtlrec checkpoint ({err})") from None
    source_pre = _source_preprocessor(run_dir)
    tables = vocabulary_tables(module, preprocessor)
    source_tables = vocabulary_tables(module, source_pre) if source_pre is not None else {}
    target_state = module.state_dict()
    loaded, skipped, remapped, rows_from_source = [], {}, {}, {}
    with torch.no_grad():
        for name, value in target_state.items():
            if name not in source_state or not name.startswith(TRANSFERRED):
                continue
            incoming = source_state[name]
            if not isinstance(value, Tensor) or not isinstance(incoming, Tensor):
                continue  # a layer's own extra state (an image layer's frozen-weights digest) describes this run
            if name in tables:
                mapping = row_map(tables[name][1], source_tables[name][1]) if name in source_tables else None
                if mapping is None:
                    skipped[name] = "an embedding table whose source vocabulary is not saved with the source run"
                    continue
                if incoming.shape[1:] != value.shape[1:] or (mapping >= incoming.shape[0]).any():
                    skipped[name] = f"shape {tuple(incoming.shape)} in the source, {tuple(value.shape)} here"
                    continue
                known = torch.from_numpy(np.flatnonzero(mapping >= 0))
                value[known] = incoming[torch.from_numpy(mapping[mapping >= 0])].to(value.dtype)
                remapped[name] = {"rows": int(value.shape[0]), "from_source": int(len(known)),
                                  "new": int(value.shape[0] - len(known))}
                rows_from_source[name] = known.tolist()
            elif incoming.shape != value.shape:
                skipped[name] = f"shape {tuple(incoming.shape)} in the source, {tuple(value.shape)} here"
                continue
            else:
                value.copy_(incoming.to(value.dtype))
                loaded.append(name)
    module.load_state_dict(target_state)
    new = [n for n, v in target_state.items() if n.startswith(TRANSFERRED) and n not in source_state
           and isinstance(v, Tensor)]
    if not loaded and not remapped:
        raise TransferError(
            f"init_from={given}: no parameter of {checkpoint.name} matches this model by name and shape (the source "
            f"is another architecture, or sizes differ); choose a source run of the same arch with the same sizes"
        )
    return {"source": str(checkpoint), "loaded": loaded, "remapped": remapped, "skipped": skipped, "new": new,
            "remapped_rows": rows_from_source}  # for L2-SP; left out of results.json (see ``recorded``)


def recorded(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report as results.json keeps it (without the per-row lists)."""
    return {k: v for k, v in report.items() if k != "remapped_rows"}


def summary(report: Mapping[str, Any]) -> str:
    rows = sum(r["from_source"] for r in report["remapped"].values())
    total = sum(r["rows"] for r in report["remapped"].values())
    return (f"init_from {report['source']}: {len(report['loaded'])} tensors loaded, {len(report['remapped'])} "
            f"embedding tables remapped ({rows:,} of {total:,} rows from the source), {len(report['skipped'])} "
            f"skipped, {len(report['new'])} new")
