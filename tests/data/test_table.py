"""TensorTable indexing and the seeded IndexBatchSampler."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mtlrec.data.table import IndexBatchSampler, TensorTable


def _table(n: int = 10) -> TensorTable:
    rows = torch.arange(n)
    return TensorTable(
        features={
            "categorical": torch.stack([rows, rows + 100], dim=1),
            "numeric": torch.stack([rows.float(), -rows.float(), rows.float() / 2], dim=1),
        },
        labels={"a": rows.float() * 10, "b": rows % 3},
        masks={"a": rows % 2 == 0},
    )


def test_table_indexing_returns_the_rows() -> None:
    t = _table()
    idx = torch.tensor([7, 0, 3, 3])
    batch = t[idx]
    assert batch.features["categorical"].tolist() == [[7, 107], [0, 100], [3, 103], [3, 103]]
    assert batch.features["numeric"].tolist() == [[7.0, -7.0, 3.5], [0.0, 0.0, 0.0], [3.0, -3.0, 1.5], [3.0, -3.0, 1.5]]
    assert batch.labels["a"].tolist() == [70.0, 0.0, 30.0, 30.0]
    assert batch.labels["b"].tolist() == [1, 0, 0, 0]
    assert batch.masks["a"].tolist() == [False, True, False, False]
    assert set(batch.features) == {"categorical", "numeric"}
    assert set(batch.labels) == {"a", "b"} and set(batch.masks) == {"a"}
    assert len(batch) == 4


def test_table_slices_are_views() -> None:
    t = _table()
    batch = t[slice(2, 5)]
    assert batch.features["categorical"][:, 0].tolist() == [2, 3, 4]
    assert batch.features["numeric"].data_ptr() == t.features["numeric"][2:].data_ptr()
    assert len(batch) == 3


def test_table_length_and_labelled_counts() -> None:
    t = _table(10)
    assert len(t) == 10
    assert t.labelled_counts() == {"a": 5, "b": 10}


def test_table_rejects_misaligned_groups() -> None:
    with pytest.raises(ValueError, match="column group 'numeric' has 4 rows, expected 5"):
        TensorTable({"categorical": torch.zeros(5, 1, dtype=torch.long), "numeric": torch.zeros(4, 1)}, {})
    with pytest.raises(ValueError, match="column group 'y' has 3 rows, expected 5"):
        TensorTable({"categorical": torch.zeros(5, 1, dtype=torch.long), "numeric": torch.zeros(5, 1)}, {"y": torch.zeros(3)})


# -- sampler -----------------------------------------------------------------------------------
def _epoch(sampler: IndexBatchSampler, epoch: int) -> list[torch.Tensor]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("n,bs", [(100, 32), (96, 32), (7, 10), (1, 1)])
def test_each_row_exactly_once_per_epoch(n: int, bs: int) -> None:
    sampler = IndexBatchSampler(n, bs, shuffle=True, seed=3)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler) == -(-n // bs)
        assert all(b.dtype == torch.int64 for b in batches)
        assert [len(b) for b in batches[:-1]] == [bs] * (len(batches) - 1)
        assert torch.equal(torch.cat(batches).sort().values, torch.arange(n))


def test_order_differs_across_epochs_and_seeds() -> None:
    sampler = IndexBatchSampler(200, 50, shuffle=True, seed=0)
    e0, e1 = torch.cat(_epoch(sampler, 0)), torch.cat(_epoch(sampler, 1))
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, torch.arange(200))
    other_seed = torch.cat(_epoch(IndexBatchSampler(200, 50, shuffle=True, seed=1), 0))
    assert not torch.equal(e0, other_seed)


def test_order_is_reproducible_for_seed_and_epoch() -> None:
    a = IndexBatchSampler(200, 64, shuffle=True, seed=7)
    b = IndexBatchSampler(200, 64, shuffle=True, seed=7)
    for epoch in (0, 1, 5):
        assert all(torch.equal(x, y) for x, y in zip(_epoch(a, epoch), _epoch(b, epoch)))
    # a resumed run (fresh sampler, set_epoch) replays the epoch's order exactly
    first = _epoch(a, 2)
    _epoch(a, 3)
    assert all(torch.equal(x, y) for x, y in zip(first, _epoch(a, 2)))
    # independent of torch's global RNG
    torch.manual_seed(123)
    x = _epoch(IndexBatchSampler(200, 64, shuffle=True, seed=7), 4)
    torch.manual_seed(999)
    y = _epoch(IndexBatchSampler(200, 64, shuffle=True, seed=7), 4)
    assert all(torch.equal(p, q) for p, q in zip(x, y))


def test_consecutive_iterations_without_set_epoch_still_reshuffle() -> None:
    sampler = IndexBatchSampler(100, 100, shuffle=True, seed=0)
    first, second = next(iter(sampler)), next(iter(sampler))
    assert not torch.equal(first, second)


def test_eval_mode_yields_contiguous_slices() -> None:
    sampler = IndexBatchSampler(10, 4, shuffle=False)
    assert list(sampler) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    sampler.set_epoch(5)
    assert list(sampler) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert list(IndexBatchSampler(8, 4, shuffle=False)) == [slice(0, 4), slice(4, 8)]


def test_drop_last() -> None:
    sampler = IndexBatchSampler(10, 4, shuffle=True, drop_last=True)
    batches = list(sampler)
    assert len(sampler) == 2 and [len(b) for b in batches] == [4, 4]
    assert len(torch.cat(batches).unique()) == 8


def test_bad_batch_size_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0 \(option data.loader.batch_size\)"):
        IndexBatchSampler(10, 0, shuffle=True)


def test_dataloader_hands_out_whole_batches() -> None:
    t = _table(10)
    sampler = IndexBatchSampler(10, 4, shuffle=True, seed=1)
    loader = DataLoader(t, sampler=sampler, batch_size=None, collate_fn=lambda b: b)
    sampler.set_epoch(0)
    batches = list(loader)
    assert [len(b.features["numeric"]) for b in batches] == [4, 4, 2]
    assert [len(b) for b in batches] == [4, 4, 2]
    rows = torch.cat([b.features["categorical"][:, 0] for b in batches])
    assert torch.equal(rows.sort().values, torch.arange(10))
    for b in batches:  # row alignment across groups survives the gather
        assert torch.equal(b.labels["a"], b.features["categorical"][:, 0].float() * 10)
    assert torch.equal(rows, torch.cat(_epoch(IndexBatchSampler(10, 4, shuffle=True, seed=1), 0)))


def test_a_batch_moves_every_tensor_to_a_device(tiny_raw) -> None:
    """What Lightning calls on a GPU (checked here on the ``meta`` device, which every machine has):
    features, labels and masks all move; on the CPU the batch is handed through untouched."""
    from mtlrec.data.datamodule import TabularDataModule

    dm = TabularDataModule(tiny_raw, batch_size=8)
    dm.setup()
    batch = dm.tables["train"][torch.arange(8)]
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    tensors = [*moved.features.values(), *moved.labels.values(), *moved.masks.values()]
    assert tensors and all(t.device.type == "meta" for t in tensors) and len(moved) == 8
    assert set(moved.features) == set(batch.features) and set(moved.masks) == set(batch.masks)
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch


@pytest.mark.parametrize("n,bs,per_epoch,world", [(31, 32, 5, 1), (155, 32, 10, 1), (100, 64, 3, 2), (7, 3, 4, 1)])
def test_batches_per_epoch_is_a_stream_of_passes(n: int, bs: int, per_epoch: int, world: int) -> None:
    """An epoch of N full batches, cut from consecutive permutations: every row is seen once per
    pass, epochs continue the stream where the previous one ended, and each process takes its
    stride of the same global batches."""
    samplers = [IndexBatchSampler(n, bs, shuffle=True, seed=4, rank=r, world_size=world, batches_per_epoch=per_epoch)
                for r in range(world)]
    epochs = 3
    stream = []
    for epoch in range(epochs):
        shares = [_epoch(s, epoch) for s in samplers]
        assert all(len(batches) == len(s) == per_epoch for batches, s in zip(shares, samplers))
        for step in range(per_epoch):
            parts = [shares[r][step] for r in range(world)]
            assert all(len(p) == bs for p in parts)
            merged = torch.empty(bs * world, dtype=torch.int64)
            for r, part in enumerate(parts):
                merged[r::world] = part
            stream.append(merged)
    stream = torch.cat(stream)
    passes, rest = divmod(len(stream), n)
    for j in range(passes):  # each whole pass is a permutation of the rows, its own one
        one_pass = stream[j * n : (j + 1) * n]
        assert torch.equal(one_pass.sort().values, torch.arange(n))
    if passes > 1:
        assert not torch.equal(stream[:n], stream[n : 2 * n])
    # a fresh sampler set to epoch 2 (a resumed run) replays epoch 2 exactly
    again = IndexBatchSampler(n, bs, shuffle=True, seed=4, rank=0, world_size=world, batches_per_epoch=per_epoch)
    assert all(torch.equal(x, y) for x, y in zip(_epoch(again, 2), _epoch(samplers[0], 2)))


def test_batches_per_epoch_leaves_evaluation_and_default_alone() -> None:
    evaluation = IndexBatchSampler(10, 4, shuffle=False, batches_per_epoch=7)
    assert list(evaluation) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    plain = IndexBatchSampler(100, 32, shuffle=True, seed=2)
    streamed = IndexBatchSampler(100, 32, shuffle=True, seed=2, batches_per_epoch=3)
    # the stream's first pass is epoch 0's permutation of the plain sampler
    assert torch.equal(torch.cat(_epoch(streamed, 0)), torch.cat(_epoch(plain, 0))[:96])


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "10"])
def test_bad_batches_per_epoch_names_the_option(bad) -> None:
    with pytest.raises(ValueError, match=r"data.loader.batches_per_epoch must be a whole number >= 1 or null"):
        IndexBatchSampler(10, 4, shuffle=True, batches_per_epoch=bad)


def test_a_stream_that_would_reach_the_next_seeds_passes_is_refused() -> None:
    sampler = IndexBatchSampler(3, 4, shuffle=True, batches_per_epoch=80_000)
    with pytest.raises(ValueError, match=r"batches_per_epoch=80000: .* more than 100003 times, into the passes of"):
        _epoch(sampler, 0)  # 320,000 rows = 106,667 passes of 3 rows
