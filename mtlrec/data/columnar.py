"""Datasets larger than memory: converted once into a memory-mapped columnar cache.

``data.out_of_core.enabled=true`` reads the declared files in chunks (:mod:`.tabular.stream`):
one pass over the training split fits the preprocessing (vocabulary counts and block-merged
moments, :class:`~mtlrec.data.columns.numeric.BlockMoments`), a second transforms every split
chunk by chunk and appends each column group (all categoricals, all numerics, each task's labels
and mask) to a file of its own. The folder also holds the fitted preprocessing, the fitted schema
and ``manifest.json``, keyed by the source files (path, size, modification time) and the
declaration, so a second run with the same files opens the cache instead of converting again,
and a changed file or declaration converts anew. The folder appears whole or not at all (it is
written aside and renamed).

Training batches are gathered by the same index tensors as an in-memory table
(:class:`MemmapTable` is a :class:`~mtlrec.data.table.TensorTable`), so the two paths give
identical batches. Ids are stored in the narrowest integer type that holds them and widened on
gather. A column group whose file is larger than ``MemmapTable.READ_ABOVE_BYTES`` is gathered
row by row with ``os.pread`` rather than through its memory map: a random batch touches one page
per row, and the kernel maps up to 16 neighbouring cached pages around every fault ("fault
around"), so 8192 random rows put ~0.5 GB of a mapped file into the process whatever
``madvise`` says; ``pread`` copies just the row out of the page cache (and measured faster than
the faulting gather). Smaller groups (labels, masks) stay mapped: their whole file is small.
Mapped pages are handed back to the kernel every ``release_rows`` gathered rows
(``madvise(MADV_DONTNEED)``), so the resident memory of an epoch stays that of the model plus
the small groups, not that of the file.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtlrec.data.datamodule import PREPROCESSOR_FILE, SCHEMA_FILE, TabularDataModule, check_split
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.raw import SPLITS
from mtlrec.data.schema import Schema
from mtlrec.data.table import Batch, TensorTable
from mtlrec.data.tabular.stream import StreamedDataset
from mtlrec.training.results import write_json_atomic

FORMAT = 1
MANIFEST = "manifest.json"


def default_cache_root() -> Path:
    base = os.environ.get("MTLREC_CACHE_DIR")
    return Path(base) / "columnar" if base else Path.home() / ".cache" / "mtlrec" / "columnar"


def manifest_key(dataset: StreamedDataset, declaration: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache is valid for: the source files as they are now, and the declaration."""
    files = []
    for path in dataset.files:
        stat = Path(path).stat()
        files.append({"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"format": FORMAT, "files": files, "declaration": declaration}


def convert(dataset: StreamedDataset, declaration: Mapping[str, Any], cache_root: str | Path | None = None,
            progress=print) -> Path:
    """The cache folder for ``dataset`` (converted now unless a valid one is there)."""
    key = manifest_key(dataset, declaration)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache_root or default_cache_root()) / f"{dataset.name}-{digest}"
    manifest = folder / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("key") == json.loads(json.dumps(key, default=str)):
        progress(f"columnar cache: {folder} (up to date)")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        pre = Preprocessor(dataset.schema).fit_stream(dataset.chunks("train"), split=dataset.source("train"))
        groups = {split: _write_split(work, split, pre, dataset) for split in SPLITS}
        write_json_atomic(work / SCHEMA_FILE, pre.fitted_schema.to_dict())
        pre.save(work / PREPROCESSOR_FILE)
        write_json_atomic(work / MANIFEST, {"key": key, "name": dataset.name, "groups": groups,
                                            "sources": {s: dataset.source(s) for s in SPLITS}})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    rows = {s: g["rows"] for s, g in groups.items()}
    progress(f"columnar cache: converted {dataset.name} into {folder} ({rows})")
    return folder


def _write_split(work: Path, split: str, pre: Preprocessor, dataset: StreamedDataset) -> dict[str, Any]:
    """Append each chunk's column groups to their files; shapes and types go to the manifest."""
    (work / split).mkdir()
    handles: dict[str, Any] = {}
    layout: dict[str, dict[str, Any]] = {}
    narrow = _narrow_groups(pre)
    rows = 0
    try:
        for chunk in dataset.chunks(split):
            table = pre.transform(chunk, split=dataset.source(split))
            for name, tensor in _groups(table).items():
                array = tensor.numpy()
                if name not in handles:
                    handles[name] = open(work / split / f"{name}.bin", "wb")
                    stored = "int32" if name in narrow and array.dtype == np.int64 else str(array.dtype)
                    layout[name] = {"dtype": str(array.dtype), "stored": stored, "shape": list(array.shape[1:])}
                handles[name].write(np.ascontiguousarray(array, dtype=layout[name]["stored"]).tobytes())
            rows += len(table)
    finally:
        for handle in handles.values():
            handle.close()
    return {"rows": rows, "columns": layout}


def _narrow_groups(pre: Preprocessor) -> set[str]:
    """Feature groups of ids whose largest possible value (the fitted vocabulary) fits int32."""
    narrow = set()
    for key, transformer in pre.transformers.items():
        sizes = transformer.encoder_args().get("field_sizes")
        if sizes is not None and sum(sizes) < 2**31:
            narrow.add(f"features.{key}")
    return narrow


def _groups(table: TensorTable) -> dict[str, Tensor]:
    """File name -> tensor: ``features.<key>``, ``labels.<task>``, ``masks.<task>``."""
    out = {f"features.{k}": v for k, v in table.features.items()}
    out.update({f"labels.{k}": v for k, v in table.labels.items()})
    out.update({f"masks.{k}": v for k, v in table.masks.items()})
    return out


class _RowReader:
    """One column group's rows read with ``os.pread`` (see the module): nothing of the file is
    mapped into the process. The descriptor is opened per process, so loader workers each get
    their own."""

    def __init__(self, path: Path, dtype: str, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        self._fd: int | None = None
        self._pid = -1

    def _descriptor(self) -> int:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, index: Tensor | slice) -> Tensor:
        fd, size = self._descriptor(), self.row_bytes
        if isinstance(index, slice):
            start, stop, _ = index.indices(os.fstat(fd).st_size // size)
            data = os.pread(fd, max(stop - start, 0) * size, start * size)
        else:
            data = b"".join([os.pread(fd, size, offset) for offset in (index.numpy() * size).tolist()])
        return torch.from_numpy(np.frombuffer(data, dtype=self.dtype).reshape(-1, *self.shape).copy())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class MemmapTable(TensorTable):
    """A split whose column groups are memory maps (see the module); batches by index as ever."""

    READ_ABOVE_BYTES = 1 << 27  # groups with larger files are gathered by pread, not through the map

    def __init__(self, folder: Path, split: str, info: Mapping[str, Any], release_rows: int = 1 << 18):
        self._maps: list[np.memmap] = []
        self._wide: dict[str, torch.dtype] = {}
        self._readers: dict[str, _RowReader] = {}
        groups: dict[str, dict[str, Tensor]] = {"features": {}, "labels": {}, "masks": {}}
        rows = int(info["rows"])
        for name, column in info["columns"].items():
            kind, key = name.split(".", 1)
            shape = (rows, *column["shape"])
            path = folder / split / f"{name}.bin"
            if rows == 0:
                array = np.zeros(shape, dtype=column["stored"])
            else:
                array = np.memmap(path, dtype=column["stored"], mode="c", shape=shape)
                self._maps.append(array)
                if array.nbytes > self.READ_ABOVE_BYTES:
                    self._readers[name] = _RowReader(path, column["stored"], tuple(column["shape"]))
            groups[kind][key] = torch.from_numpy(array)
            if column["stored"] != column["dtype"]:
                self._wide[name] = getattr(torch, column["dtype"])
        super().__init__(groups["features"], groups["labels"], groups["masks"], num_rows=rows)
        self.release_rows, self._since_release = release_rows, 0

    def __getitem__(self, index: Tensor | slice) -> Batch:
        rows = len(range(*index.indices(len(self)))) if isinstance(index, slice) else int(index.shape[0])
        out: dict[str, dict[str, Tensor]] = {}
        for kind in ("features", "labels", "masks"):
            out[kind] = {}
            for key, mapped in getattr(self, kind).items():
                name = f"{kind}.{key}"
                if name in self._readers:
                    value = self._readers[name][index]
                else:  # a slice of the map is a view: copy it out before its pages go
                    value = mapped[index].clone() if isinstance(index, slice) else mapped[index]
                out[kind][key] = value.to(self._wide[name]) if name in self._wide else value
        self._since_release += rows
        if self._since_release >= self.release_rows:
            self.release()
        return Batch(out["features"], out["labels"], out["masks"], rows)

    def _columns(self):
        for kind in ("features", "labels", "masks"):
            for key, mapped in getattr(self, kind).items():
                yield kind, key, mapped, self._wide.get(f"{kind}.{key}", mapped.dtype)

    def to(self, device: torch.device | str) -> TensorTable:
        """The whole split on ``device``, in the dtypes batches have (narrow stored ones widened there,
        not on the host)."""
        groups: dict[str, dict[str, Tensor]] = {"features": {}, "labels": {}, "masks": {}}
        for kind, key, mapped, dtype in self._columns():
            groups[kind][key] = mapped.to(device).to(dtype)
        self.release()
        return TensorTable(groups["features"], groups["labels"], groups["masks"], num_rows=len(self))

    @property
    def nbytes(self) -> int:
        return sum(mapped.numel() * dtype.itemsize for _, _, mapped, dtype in self._columns())

    def release(self) -> None:
        """Hand the mapped pages back to the kernel (they stay in the page cache)."""
        for array in self._maps:
            handle = getattr(array, "_mmap", None)
            if handle is not None and hasattr(handle, "madvise"):
                handle.madvise(mmap.MADV_DONTNEED)
        self._since_release = 0

    def labelled_counts(self) -> dict[str, int]:
        counts = super().labelled_counts()
        self.release()
        return counts


class ColumnarDataModule(TabularDataModule):
    """:class:`TabularDataModule` on a converted cache: the schema, the preprocessing and the
    tables come from the folder; batches are formed exactly as in memory."""

    def __init__(self, folder: str | Path, batch_size: int = 1024, eval_batch_size: int = 16384, seed: int = 0,
                 num_workers: int | None = None, on_device: str | bool = "auto", batches_per_epoch: int | None = None):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        schema = Schema.from_dict(json.loads((self.folder / SCHEMA_FILE).read_text()))
        self.raw = _Described(self.manifest["name"], self.manifest["sources"], schema)
        super().__init__(self.raw, batch_size, eval_batch_size, seed, num_workers, on_device, batches_per_epoch)
        self.schema = schema
        self.preprocessor = Preprocessor.load(self.folder / PREPROCESSOR_FILE, schema)

    def _build_tables(self) -> None:
        tables = {}
        for split in SPLITS:
            tables[split] = MemmapTable(self.folder, split, self.manifest["groups"][split])
            check_split(tables[split], self.schema, self.raw.where(split))
            tables[split].release()
        self.tables = tables


class _Described:
    """What the datamodule and the results need of a dataset: its name, schema and sources."""

    def __init__(self, name: str, sources: Mapping[str, str], schema: Schema):
        self.name, self.sources, self.schema = name, dict(sources), schema

    def where(self, split: str) -> str:
        return f"{self.name}/{split} ({self.sources[split]})"
