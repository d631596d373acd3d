"""Columnar tensors for one split, and batches taken by index.

A split is a handful of tensors: one per input group (all categoricals as one int64 matrix of
global ids, all numerics as one float matrix, one padded token matrix per token-bag feature), one
label tensor and optional mask per task. A batch is ``table[index_tensor]``: one gather per
tensor, no per-sample ``__getitem__`` and no collate. :class:`IndexBatchSampler` yields those
index tensors from a seeded permutation, so a plain
``DataLoader(table, sampler=IndexBatchSampler(...), batch_size=None)`` hands out whole batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Sampler


@dataclass
class Batch:
    """Rows of one split: ``features`` by input name (the encoder's keys), ``labels`` and
    ``masks`` by task, and ``domain`` (``[B]`` float, 1 for a target-domain row, 0 for a source
    row) when the data declares domains (``data.domain``). ``to(device)`` makes it a
    Lightning-transferable type."""

    features: dict[str, Tensor]
    labels: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    num_rows: int = 0
    domain: Tensor | None = None

    def __len__(self) -> int:
        return self.num_rows

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        move = lambda d: {k: v.to(device, non_blocking=non_blocking) for k, v in d.items()}  # noqa: E731
        domain = None if self.domain is None else self.domain.to(device, non_blocking=non_blocking)
        return Batch(move(self.features), move(self.labels), move(self.masks), self.num_rows, domain)

    def pin_memory(self) -> "Batch":
        """Page-locked copies (what ``DataLoader(pin_memory=True)`` calls), so that the copy to a
        GPU is asynchronous."""
        pin = lambda d: {k: v.pin_memory() for k, v in d.items()}  # noqa: E731
        domain = None if self.domain is None else self.domain.pin_memory()
        return Batch(pin(self.features), pin(self.labels), pin(self.masks), self.num_rows, domain)


@dataclass
class TensorTable:
    """One split as column-group tensors (rows aligned across all of them)."""

    features: dict[str, Tensor]  # input name -> [N, ...]
    labels: dict[str, Tensor]  # task -> [N] or [N, D]; float32 (binary/multilabel/regression) or int64 (multiclass)
    masks: dict[str, Tensor] = field(default_factory=dict)  # task -> [N] bool, only for masked tasks
    num_rows: int | None = None
    domain: Tensor | None = None  # [N] float: 1 target, 0 source (data.domain); None: one domain

    def __post_init__(self) -> None:
        groups = {**self.features, **self.labels, **self.masks, **({"domain": self.domain} if self.domain is not None
                                                                   else {})}
        if self.num_rows is None:
            if not groups:
                raise ValueError("a table needs at least one tensor (or num_rows)")
            self.num_rows = next(iter(groups.values())).shape[0]
        for name, t in groups.items():
            if t.shape[0] != self.num_rows:
                raise ValueError(f"column group {name!r} has {t.shape[0]} rows, expected {self.num_rows}")

    def __len__(self) -> int:
        return int(self.num_rows)

    def __getitem__(self, index: Tensor | slice) -> Batch:
        """The rows at ``index`` (a 1-D int64 tensor or a slice) as one batch."""
        if isinstance(index, slice):
            rows, take = len(range(*index.indices(len(self)))), lambda v: v[index]
        else:  # index_select: a third of advanced indexing's time per batch (measured, CPU)
            rows, take = int(index.shape[0]), lambda v: v.index_select(0, index)
        return Batch(
            {k: take(v) for k, v in self.features.items()},
            {k: take(v) for k, v in self.labels.items()},
            {k: take(v) for k, v in self.masks.items()},
            rows,
            None if self.domain is None else take(self.domain),
        )

    def to(self, device: torch.device | str) -> "TensorTable":
        """The same table with every tensor on ``device`` (batches are then gathered there)."""
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        domain = None if self.domain is None else self.domain.to(device)
        return TensorTable(move(self.features), move(self.labels), move(self.masks), self.num_rows, domain)

    @property
    def nbytes(self) -> int:
        tensors = [*self.features.values(), *self.labels.values(), *self.masks.values()]
        tensors += [self.domain] if self.domain is not None else []
        return sum(t.numel() * t.element_size() for t in tensors)

    def labelled_counts(self) -> dict[str, int]:
        """Per task, how many rows carry a label (its sample space)."""
        n = len(self)
        return {k: int(self.masks[k].sum()) if k in self.masks else n for k in self.labels}


PASSES_PER_SEED = 100_003  # the generator seed of pass j (or epoch j) of seed s is s·100 003 + j


def check_batches_per_epoch(value: object) -> None:
    """``data.loader.batches_per_epoch``: null or a whole number >= 1, else one line naming it."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if value is not None and not (whole and value >= 1):
        raise ValueError(f"data.loader.batches_per_epoch must be a whole number >= 1 or null (one pass over the "
                         f"rows), got {value!r}")


class IndexBatchSampler(Sampler):
    """Yields one index per batch: a slice of a permutation drawn anew each epoch (training), or a
    contiguous ``slice`` (evaluation).

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a run is reproducible and a
    resumed run sees the same order it would have seen.

    With ``world_size`` processes (data parallelism), every process draws the same permutation and
    cuts it into the same *global* batches of ``batch_size × world_size`` rows; process ``rank``
    takes rows ``rank, rank + world_size, …`` of each. So every training row is seen exactly once
    per epoch across the processes, every process takes the same number of steps, and a step's
    gradient, all-reduced, is that of one process on the global batch. Evaluation gives each process
    a contiguous share of the rows (every row once; the metrics are synchronised when computed).

    ``device``: the permutation goes there once per epoch, so that a table on a GPU is indexed by
    indices already on it (no host-to-device copy per step).

    ``batches_per_epoch`` (training only): an epoch is this many full batches instead of one pass
    over the rows. The batches are cut from an endless stream of passes, pass ``j`` a permutation
    that depends only on ``(seed, j)``, and epoch ``e`` takes the stream's batches ``e·N … e·N + N
    − 1``; so every row is seen equally often over the passes, and a resumed run replays the same
    batches. A batch that straddles two passes (or is larger than the table) can hold a row twice.
    Why: with a few-shot training set an epoch is one or two steps, so a budget in epochs gives
    runs with different k (or another batch size) a different number of optimizer steps, and
    validates after every step; a fixed number of batches per epoch gives every run the same
    steps between validations.
    """

    def __init__(self, num_rows: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, device: torch.device | str | None = None,
                 batches_per_epoch: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size} (option data.loader.batch_size)")
        check_batches_per_epoch(batches_per_epoch)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.num_rows, self.batch_size, self.shuffle = num_rows, batch_size, shuffle
        self.seed, self.drop_last = seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.device = device  # where the training indices go (the tables' device): one copy per epoch
        self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch is not None and shuffle else None
        self.epoch = 0
        rest = num_rows % (batch_size * world_size)
        if shuffle and not drop_last and 0 < rest < world_size and self.batches_per_epoch is None:
            raise ValueError(
                f"data.loader.batch_size={batch_size}: with {world_size} processes the last training batch of "
                f"{num_rows} rows would hold {rest} rows, fewer than one per process; choose another batch size")
        share = -(-num_rows // world_size)  # evaluation: contiguous shares of this many rows
        self._eval_rows = (min(rank * share, num_rows), min((rank + 1) * share, num_rows))

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch, so a resumed run replays the same order."""
        self.epoch = epoch

    def __len__(self) -> int:
        if not self.shuffle:
            start, stop = self._eval_rows
            return -(-(stop - start) // self.batch_size)
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        full, rest = divmod(self.num_rows, self.batch_size * self.world_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self) -> Iterator[Tensor | slice]:
        if not self.shuffle:  # evaluation: contiguous slices are views, no gather at all
            start, stop = self._eval_rows
            for i in range(len(self)):
                yield slice(start + i * self.batch_size, min(start + (i + 1) * self.batch_size, stop))
            return
        size = self.batch_size * self.world_size
        if self.batches_per_epoch is not None:
            order = self._stream(self.epoch * self.batches_per_epoch * size, self.batches_per_epoch * size)
        else:
            order = self._permutation(self.epoch)
        if self.device is not None:
            order = order.to(self.device)
        self.epoch += 1
        for i in range(len(self)):
            yield order[i * size : (i + 1) * size][self.rank :: self.world_size]

    def _permutation(self, index: int) -> Tensor:
        """Pass ``index``'s order, drawn on the host: the same order on any device."""
        generator = torch.Generator().manual_seed(self.seed * PASSES_PER_SEED + index)
        return torch.randperm(self.num_rows, generator=generator)

    def _stream(self, start: int, length: int) -> Tensor:
        """Positions ``start … start + length − 1`` of the endless stream of passes."""
        first, offset = divmod(start, self.num_rows)
        last = (start + length - 1) // self.num_rows
        if last >= PASSES_PER_SEED:  # pass PASSES_PER_SEED of seed s would be pass 0 of seed s + 1
            raise ValueError(f"data.loader.batches_per_epoch={self.batches_per_epoch}: this run would go over its "
                             f"{self.num_rows} training rows more than {PASSES_PER_SEED} times, into the passes of "
                             f"the next seed; use fewer batches per epoch, fewer epochs or a smaller batch size")
        passes = torch.cat([self._permutation(j) for j in range(first, last + 1)])
        return passes[offset : offset + length]


class StackedIndexBatchSampler(Sampler):
    """The batches of several seeds' training samplers, concatenated: step ``i`` yields batch ``i``
    of each seed's own permutation, one after the other (``K·B`` indices), for K seeds trained as
    one stacked model (:mod:`mtlrec.training.stacked`). Every seed so sees exactly the order its
    run of its own would have seen; the K batches of a step have the same size, the last one too."""

    def __init__(self, samplers: list[IndexBatchSampler]):
        if not samplers or len({len(s) for s in samplers}) != 1:
            raise ValueError("stacked samplers must be at least one, all with the same number of batches")
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self) -> Iterator[Tensor]:
        for parts in zip(*self.samplers):
            yield torch.cat(parts)
