"""Lightning DataModule: fit preprocessing on train, hold each split as tensors, hand out batches."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from mtlrec.data.images import BatchTransforms
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.raw import SPLITS, RawDataset
from mtlrec.data.schema import Schema, SchemaError
from mtlrec.data.table import Batch, IndexBatchSampler, StackedIndexBatchSampler, TensorTable, check_batches_per_epoch
from mtlrec.training.results import write_json_atomic

SCHEMA_FILE = "schema.json"
PREPROCESSOR_FILE = "preprocessor.json"


def check_split(table: TensorTable, schema: Schema, where: str) -> None:
    """Refuse a split that cannot be trained or evaluated on: no rows, a binary task whose labelled
    rows hold one value only, or a multilabel task none of whose tags has both values (the AUC is
    then undefined, so selection would read noise)."""
    if len(table) == 0:
        raise SchemaError(f"{where}: the split has no rows; check the split rule (ratios, time cut, split column)")
    for task in schema.tasks:
        if task.kind not in ("binary", "multilabel"):
            continue
        y = table.labels[task.name]
        if task.name in table.masks:
            y = y[table.masks[task.name]]
        if task.kind == "binary":
            values = torch.unique(y).tolist()
            if len(values) < 2:
                what = f"only label {values[0]:g}" if values else "no labelled row"
                raise SchemaError(
                    f"{where}: binary task {task.name!r} has {what} ({len(y)} labelled rows), so its AUC is undefined; "
                    f"use a larger split or another split rule"
                )
        elif not bool(((y.sum(0) > 0) & (y.sum(0) < len(y))).any()):
            raise SchemaError(
                f"{where}: multilabel task {task.name!r} has no tag that is both present and absent among its "
                f"{len(y)} labelled rows, so no tag's AUC is defined; use a larger split or another split rule"
            )


class TabularDataModule(L.LightningDataModule):
    """Splits of a :class:`RawDataset` as :class:`TensorTable` s.

    The preprocessor is fit on the training split only; validation and test are transformed with
    it (unseen categories -> OOV). Training batches follow a seeded per-epoch permutation.
    :attr:`schema` is the *fitted* schema (e.g. multilabel tags learned from training).

    Batches are formed by indexing the tables, so there is nothing to collate; the collate step
    only runs :attr:`batch_transforms` (reading pixels for a backbone that trains), in
    ``num_workers`` worker processes. ``num_workers=None``: 0 when there is nothing to transform
    (workers would only add copies), else up to 2. On a GPU the tables move to it when they fit
    (``on_device``, see :meth:`_place_tables`); otherwise batches are page-locked for an
    asynchronous copy.
    """

    def __init__(self, raw: RawDataset, batch_size: int = 1024, eval_batch_size: int = 16384, seed: int = 0,
                 num_workers: int | None = None, on_device: str | bool = "auto", batches_per_epoch: int | None = None):
        super().__init__()
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"data.loader.num_workers must be >= 0, got {num_workers}")
        if on_device not in ("auto", True, False):
            raise ValueError(f"data.loader.on_device must be auto, true or false, got {on_device!r}")
        check_batches_per_epoch(batches_per_epoch)
        self.on_device = on_device
        self.table_device: torch.device | None = None  # set when the tables moved to the accelerator
        self.raw, self.schema = raw, raw.schema
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch  # training epochs of this many batches (IndexBatchSampler)
        self.preprocessor = Preprocessor(raw.schema)
        self.tables: dict[str, TensorTable] = {}
        self.batch_transforms: dict[str, Callable] = {}
        self.train_batch_transforms: dict[str, Callable] = {}

    def set_batch_transforms(self, transforms: Mapping[str, Callable],
                             training: Mapping[str, Callable] | None = None) -> None:
        """What the workers do to a batch's features first; ``training``: for training batches
        (image augmentation), default the same."""
        self.batch_transforms = dict(transforms)
        self.train_batch_transforms = dict(training) if training is not None else dict(transforms)

    def setup(self, stage: str | None = None) -> None:
        if not self.tables:
            self._build_tables()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and self.table_device is None:
            self._place_tables(trainer.strategy.root_device)

    def _place_tables(self, device: torch.device) -> None:
        """The tables on the accelerator when they fit (``data.loader.on_device``): a batch is then
        gathered there, with no host-to-device copy of it per step. ``auto``: when every split
        together takes at most a quarter of the device's free memory (the rest is the model's and
        its activations') and no batch transform reads files (image pixels are read by workers)."""
        if device.type == "cpu" or self.on_device is False:
            return
        nbytes = sum(t.nbytes for t in self.tables.values())
        transforms = bool(self.batch_transforms or self.train_batch_transforms)
        if self.on_device is True and transforms:
            raise ValueError("data.loader.on_device=true: this run's batches go through transforms that read files "
                             "(image pixels), in DataLoader workers; use data.loader.on_device=auto or false")
        if self.on_device == "auto":
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
            if transforms or nbytes > free // 4:
                return
        self.tables = {split: table.to(device) for split, table in self.tables.items()}
        self.table_device = device

    def _build_tables(self) -> None:
        self.preprocessor.fit(self.raw.splits["train"], split=self.raw.where("train"))
        self.schema = self.preprocessor.fitted_schema
        tables = {}
        for split in SPLITS:
            tables[split] = self.preprocessor.transform(self.raw.splits[split], split=self.raw.where(split))
            check_split(tables[split], self.schema, self.raw.where(split))
        self.tables = tables

    def save_preprocessing(self, run_dir: str | Path) -> None:
        """``schema.json`` + ``preprocessor.json``: what a trained run needs to score new data."""
        write_json_atomic(Path(run_dir) / SCHEMA_FILE, self.schema.to_dict())
        self.preprocessor.save(Path(run_dir) / PREPROCESSOR_FILE)

    def labelled_counts(self) -> dict[str, int]:
        self.setup()
        return self.tables["train"].labelled_counts()

    def transfer_batch_to_device(self, batch: Batch, device, dataloader_idx: int) -> Batch:
        # Batches are gathered from CPU tensors: "moving" them to the CPU costs time on every
        # step for nothing, so only a real device gets the transfer.
        if device.type == "cpu":
            return batch
        return batch.to(device, non_blocking=True)

    def _loader(self, split: str, batch_size: int, shuffle: bool, seeds: list[int] | None = None) -> DataLoader:
        table = self.tables[split]
        trainer = getattr(self, "trainer", None)  # data parallel: this process's share (IndexBatchSampler)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        per_epoch = self.batches_per_epoch if shuffle else None
        samplers = [IndexBatchSampler(len(table), batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world,
                                      device=self.table_device, batches_per_epoch=per_epoch)
                    for seed in (seeds or [self.seed])]
        sampler = samplers[0] if seeds is None else StackedIndexBatchSampler(samplers)
        transforms = self.train_batch_transforms if split == "train" else self.batch_transforms
        workers = self.num_workers
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if transforms else 0
        if self.table_device is not None:
            workers = 0  # batches are gathered on the device, in this process
        # tables on the host, model on a GPU: page-locked batches, copied asynchronously
        pin = trainer is not None and self.table_device is None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(table, sampler=sampler, batch_size=None, collate_fn=BatchTransforms(transforms),
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def stacked_train_dataloader(self, seeds: list[int]) -> DataLoader:
        """Training batches of several seeds at once: each step, every seed's own next batch (in the
        order its own run would draw), concatenated (:class:`StackedIndexBatchSampler`)."""
        return self._loader("train", self.batch_size, shuffle=True, seeds=list(seeds))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
