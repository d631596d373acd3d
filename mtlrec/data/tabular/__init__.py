"""A dataset declared in YAML alone (``data=tabular``): files, joins, derived labels, a split rule.

**No Python for a new dataset.** A retailer's export is a CSV/TSV/Parquet file of interactions,
perhaps with user and item side tables; everything needed to train on it (which columns are
features of which kind, which are labels, how to split) is configuration, checked by this
package, one concept a module: :mod:`.options` (option and column checks), :mod:`.files`
(locating and reading), :mod:`.joins`, :mod:`.derived` (derived labels), :mod:`.splits` and
:mod:`.declaration` (the schema). This module only puts them in order.

Only numeric preprocessing is left out: it is fit on the training split by
:mod:`mtlrec.data.preprocess`, which also checks the label values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mtlrec.data.raw import SPLITS, RawDataset
from mtlrec.data.schema import Schema, SchemaError
from mtlrec.data.tabular.declaration import build_schema, used_columns
from mtlrec.data.tabular.derived import derive, derived_rules
from mtlrec.data.tabular.domains import domain_options, select_domains
from mtlrec.data.tabular.files import locate, read_table
from mtlrec.data.tabular.joins import join, read_side_tables
from mtlrec.data.tabular.options import checked_column, no_unknown_keys
from mtlrec.data.tabular.splits import make_splits, split_options

__all__ = ["load_tabular"]

MISSING = "???"  # an unset required field of conf/data/tabular.yaml (after OmegaConf.to_container)


def load_tabular(
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
) -> RawDataset:
    """Read, join, derive, split and declare a dataset from its YAML description.

    The keys are documented in ``conf/data/tabular.yaml``. Frames keep every column of the file
    (plus joined and derived ones); only the declared features are inputs.

    Raises:
        DatasetNotFoundError: a file is missing (and no download is given for it).
        SchemaError: anything else the declaration or the files get wrong, in one line naming the
            option, the file, the column (and row) and the fix.
    """
    domains = domain_options(domain)
    declared = declare(files, features, tasks, main_task, root, download, split, derived, exclude,
                       domain_column=domains["column"] if domains else None)
    sides = read_side_tables(joins, root)
    frames = {key: _interactions(path, reader, sides, declared.rules, dropna) for key, path in declared.paths.items()}
    for frame, where in frames.values():
        declared.check_columns(frame, where)
    splits, described = make_splits(frames, declared.paths, declared.split)
    if domains:
        splits = select_domains(splits, domains, described)
    return RawDataset(schema=declared.schema, splits=splits, name=str(name), sources=described)


@dataclass
class Declaration:
    """What a declaration says before any row is read: the schema, the split rule, the derived
    labels' rules and the located main files (by split; ``None`` for the one file of a
    ratio/column/time split)."""

    schema: Schema
    split: dict[str, Any]
    rules: dict[str, dict[str, Any]]
    paths: dict[str | None, Path]
    exclude: tuple[str, ...]
    domain_column: str | None = None

    def check_columns(self, frame: pd.DataFrame, where: str) -> None:
        used = used_columns(self.schema, self.split, self.exclude)
        for option, column in used + ([("data.domain.column", self.domain_column)] if self.domain_column else []):
            checked_column(frame, column, option, where)


def declare(files, features, tasks, main_task, root=None, download=None, split=None, derived=None,
            exclude=(), domain_column: str | None = None) -> Declaration:
    """Check the declaration and locate its files (shared by the in-memory and the streaming reader).
    The domain column (``data.domain``) names where a row comes from: never an input."""
    _require_set(files=files, features=features, tasks=tasks, main_task=main_task)
    opts = split_options(split, files)
    rules = derived_rules(derived)
    paths = _main_files(files, root, download, carve_val=opts["val_share"] is not None)
    sources = {name: str(rule["from"]) for name, rule in rules.items()}
    excluded = [*sources.values(), *([opts["column"]] if opts["kind"] == "column" else []), *exclude,
                *([domain_column] if domain_column else [])]
    schema = build_schema(features, tasks, main_task, sources, tuple(dict.fromkeys(excluded)), paths)
    return Declaration(schema, opts, rules, paths, tuple(exclude), domain_column)


def _require_set(**required: object) -> None:
    unset = [k for k, v in required.items() if isinstance(v, str) and v == MISSING]
    if unset:
        raise SchemaError(
            f"data.{unset[0]} is required (??? in conf/data/tabular.yaml); set it, e.g. data.{unset[0]}=…"
        )


def _interactions(
    path: Path, reader: Mapping | None, sides: Sequence[Mapping], rules: Mapping, dropna: Sequence[str]
) -> tuple[pd.DataFrame, str]:
    """One interactions file, read, joined with every side table, given its derived labels and
    rid of the rows ``dropna`` names; also how errors name it. The index stays the file's row
    number, so later messages point at the row to fix."""
    return prepared(read_table(path, reader, "data.reader"), str(path), sides, rules, dropna)


def prepared(
    frame: pd.DataFrame, where: str, sides: Sequence[Mapping], rules: Mapping, dropna: Sequence[str]
) -> tuple[pd.DataFrame, str]:
    """Rows of an interactions file (all, or a chunk) joined, derived and rid of ``dropna`` rows."""
    for side in sides:
        frame, where = join(frame, where, side), f"{where} (joined with {side['path']})"
    frame = derive(frame, where, rules)
    columns = [checked_column(frame, c, "data.dropna", where) for c in dropna]
    return (frame.dropna(subset=columns) if columns else frame), where


def _main_files(
    files: object, root: str | None, download: Mapping | None, carve_val: bool = False
) -> dict[str | None, Path]:
    """Split (None for the one file of a ratio/column/time split) -> its located path (no val
    file when validation is carved from train: ``data.split.val_share``)."""
    if isinstance(files, Mapping):
        no_unknown_keys(files, SPLITS, "data.files")
        needed = [s for s in SPLITS if not (carve_val and s == "val")]
        lacking = [s for s in needed if not files.get(s)]
        if lacking:
            raise SchemaError(f"data.files: no file for split(s) {lacking}; give {{train: ..., val: ..., test: ...}} "
                              f"(or carve val from train with data.split.val_share)")
        per_split = download if download and "url" not in download else {}
        if download and not per_split:
            raise SchemaError("data.download: data.files has one file per split, so give {train: {url, sha256}, ...}")
        return {s: locate(files[s], root, f"data.files.{s}", per_split.get(s)) for s in needed}
    if not isinstance(files, (str, Path)):
        raise SchemaError(f"data.files: expected a file or {{train: ..., val: ..., test: ...}}, got {files!r}")
    if download and "url" not in download:
        raise SchemaError("data.download: data.files is one file, so give {url: ..., sha256: ...}")
    return {None: locate(files, root, "data.files", download)}


def _stream(**declaration: Any):
    from mtlrec.data.tabular.stream import stream_tabular

    return stream_tabular(**declaration)


# the chunked reader of the same declaration (data.out_of_core), found by mtlrec.build
load_tabular.stream = _stream  # type: ignore[attr-defined]
