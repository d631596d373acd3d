"""Tables on the accelerator (``data.loader.on_device``): when they move, what the sampler hands out
then, and the refusals. The move itself to a GPU is checked in ``tests/training/test_no_host_sync.py``
(skipped without one); here the decisions run on the "meta" device, which every machine has."""

from __future__ import annotations

import pytest
import torch

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.table import IndexBatchSampler


def test_tables_stay_on_the_host_for_a_cpu_run_or_when_asked(tiny_raw) -> None:
    for on_device, device in (("auto", "cpu"), (True, "cpu"), (False, "meta")):
        dm = TabularDataModule(tiny_raw, batch_size=32, on_device=on_device)
        dm.setup()
        dm._place_tables(torch.device(device))
        assert dm.table_device is None and dm.tables["train"].features["categorical"].device.type == "cpu"


def test_auto_moves_only_what_fits_in_a_quarter_of_the_free_memory(tiny_raw) -> None:
    dm = TabularDataModule(tiny_raw, batch_size=32, on_device="auto")
    dm.setup()
    dm._place_tables(torch.device("meta"))  # no free memory known there: stays
    assert dm.table_device is None
    dm = TabularDataModule(tiny_raw, batch_size=32, on_device=True)
    dm.setup()
    nbytes = sum(t.nbytes for t in dm.tables.values())
    dm._place_tables(torch.device("meta"))
    assert dm.table_device == torch.device("meta")
    assert all(t.device.type == "meta" for table in dm.tables.values() for t in table.features.values())
    assert sum(t.nbytes for t in dm.tables.values()) == nbytes
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and loader.sampler.device == torch.device("meta")


def test_on_device_with_file_reading_transforms_is_refused(tiny_raw) -> None:
    dm = TabularDataModule(tiny_raw, batch_size=32, on_device=True)
    dm.setup()
    dm.set_batch_transforms({"image": lambda x: x})
    with pytest.raises(ValueError, match=r"data.loader.on_device=true: .* use data.loader.on_device=auto or false"):
        dm._place_tables(torch.device("meta"))
    with pytest.raises(ValueError, match=r"data.loader.on_device must be auto, true or false, got 'gpu'"):
        TabularDataModule(tiny_raw, on_device="gpu")


def test_the_sampler_puts_the_same_order_on_the_tables_device() -> None:
    host = IndexBatchSampler(100, 16, shuffle=True, seed=3)
    placed = IndexBatchSampler(100, 16, shuffle=True, seed=3, device="cpu")
    for a, b in zip(host, placed, strict=True):
        assert torch.equal(a, b)
    on_meta = list(IndexBatchSampler(100, 16, shuffle=True, seed=3, device="meta"))
    assert len(on_meta) == 7 and all(i.device.type == "meta" for i in on_meta)
