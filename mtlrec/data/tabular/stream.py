"""The same declaration as :func:`~mtlrec.data.tabular.load_tabular`, read in chunks.

For a dataset larger than memory (:mod:`mtlrec.data.columnar` converts it once): each split is a
sequence of frames of at most ``chunk_rows`` rows, in file order, joined, derived and filtered
exactly as the whole file would be, so the two paths see the same rows in the same order.
Only split rules that decide a row from the row itself can stream: one file per split, or
train/test files with validation carved from train (``split.val_share``, a hash of the row
number). A random share, a time cut or a split column needs all rows at once and is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mtlrec.data.raw import SPLITS
from mtlrec.data.schema import Schema, SchemaError
from mtlrec.data.tabular import Declaration, declare, prepared
from mtlrec.data.tabular.domains import domain_options
from mtlrec.data.tabular.files import iter_table
from mtlrec.data.tabular.joins import read_side_tables
from mtlrec.data.tabular.splits import carved_to_validation


@dataclass
class StreamedDataset:
    """A schema and, per split, a way to read its rows chunk by chunk (see the module)."""

    declared: Declaration
    name: str
    reader: Mapping[str, Any] | None
    sides: Sequence[Mapping] = field(default_factory=list)
    dropna: Sequence[str] = ()
    chunk_rows: int = 1 << 18

    @property
    def schema(self) -> Schema:
        return self.declared.schema

    @property
    def files(self) -> list[Path]:
        """Every file the rows come from (the manifest of a converted cache is keyed by them)."""
        return [*self.declared.paths.values(), *(Path(s["path"]) for s in self.sides)]

    def source(self, split: str) -> str:
        opts, paths = self.declared.split, self.declared.paths
        if split == "val" and opts.get("val_share") is not None:
            share = float(opts["val_share"])
            return f"{paths['train']}, a {share:g} share of its rows (hashed row numbers, seed {opts['seed']})"
        if split == "train" and opts.get("val_share") is not None:
            return f"{paths['train']}, the rest after validation"
        return str(paths[split])

    def chunks(self, split: str) -> Iterator[pd.DataFrame]:
        opts = self.declared.split
        carve = split in ("train", "val") and opts.get("val_share") is not None
        path = self.declared.paths["train" if carve else split]
        for chunk in iter_table(path, self.reader, "data.reader", self.chunk_rows):
            frame, where = prepared(chunk, str(path), self.sides, self.declared.rules, self.dropna)
            self.declared.check_columns(frame, where)
            if carve:
                to_val = carved_to_validation(frame.index.to_numpy(), float(opts["val_share"]), int(opts["seed"]))
                frame = frame[to_val] if split == "val" else frame[~to_val]
            if len(frame):
                yield frame


def stream_tabular(
    files: str | Mapping[str, str],
    features: Mapping[str, Sequence[Any]],
    tasks: Sequence[Mapping[str, Any]],
    main_task: str,
    name: str = "tabular",
    root: str | None = None,
    reader: Mapping[str, Any] | None = None,
    download: Mapping[str, Any] | None = None,
    split: Mapping[str, Any] | None = None,
    joins: Sequence[Mapping[str, Any]] | None = None,
    derived: Mapping[str, Mapping[str, Any]] | None = None,
    dropna: Sequence[str] = (),
    exclude: Sequence[str] = (),
    domain: Mapping[str, Any] | None = None,
    chunk_rows: int = 1 << 18,
) -> StreamedDataset:
    """The declaration of ``conf/data/tabular.yaml``, to be read in chunks (nothing is read yet
    but the side tables, which are joined onto every chunk and so must fit in memory)."""
    if domain_options(domain):
        raise SchemaError("data.domain: a dataset read out of core (data.out_of_core.enabled) cannot be split by "
                          "domain; write the domain's rows to their own files, or train in memory")
    declared = declare(files, features, tasks, main_task, root, download, split, derived, exclude)
    if declared.split["kind"] != "files":
        raise SchemaError(
            f"data.out_of_core: a {declared.split['kind']} split needs every row at once; give one file per split "
            f"(data.files = {{train: ..., val: ..., test: ...}}) or train/test files with data.split.val_share"
        )
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise SchemaError(f"data.out_of_core.chunk_rows must be a positive number of rows, got {chunk_rows!r}")
    missing = [s for s in SPLITS if s not in declared.paths and not (s == "val" and declared.split["val_share"])]
    if missing:
        raise SchemaError(f"data.files: no file for split(s) {missing}")
    return StreamedDataset(declared, str(name), reader, read_side_tables(joins, root), tuple(dropna), chunk_rows)
