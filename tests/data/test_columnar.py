"""Out-of-core data: the memory-mapped columnar cache gives the in-memory path's batches, bit for
bit; the streaming statistics are the in-memory ones; the cache is keyed by its source files and
written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule
from mtlrec.data.columnar import MemmapTable
from mtlrec.data.columns.numeric import BlockMoments
from mtlrec.data.schema import SchemaError
from mtlrec.train import CONFIG_DIR
from tests.conftest import sample_overrides, train_in_process

TASKS = "[{name: click, kind: binary, sample_space: impressions}, {name: cvr, kind: binary, label: buy, mask: click}]"


def _log(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(int)
    price = rng.lognormal(2, 1, n)
    price[rng.random(n) < 0.1] = np.nan  # gaps: imputed, left out of the moments
    return pd.DataFrame({"user": rng.integers(0, 500, n), "shop": rng.choice(list("abcdefghij"), n),
                         "price": price, "age": rng.normal(40, 9, n), "click": click,
                         "buy": np.where(click == 1, (rng.random(n) < 0.4).astype(int), 0)})


@pytest.fixture()
def files(tmp_path):
    for split, (n, seed) in {"train": (3000, 0), "val": (600, 1), "test": (600, 2)}.items():
        frame = _log(n, seed)
        frame.to_parquet(tmp_path / f"{split}.parquet") if split == "train" else frame.to_csv(tmp_path / f"{split}.csv",
                                                                                              index=False)
    return tmp_path


FEATURES = "{categorical: [user, {name: shop, min_count: 2}], numeric: [{name: price, log1p: true}, age]}"
FILES = "{train: train.parquet, val: val.csv, test: test.csv}"


def _overrides(root: Path, features: str = FEATURES, files: str = FILES) -> list[str]:
    return ["data=tabular", f"data.root={root}", f"data.files={files}", f"data.features={features}",
            f"data.tasks={TASKS}", "data.main_task=click", "data.loader.batch_size=128"]


def _mapped(overrides: list[str], cache: Path, chunk_rows: int = 257):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "data.out_of_core.enabled=true",
                                           f"data.out_of_core.chunk_rows={chunk_rows}",
                                           f"data.out_of_core.cache_dir={cache}"])
    return build_datamodule(cfg)


def _datamodules(overrides: list[str], cache: Path, chunk_rows: int = 257):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        memory = build_datamodule(compose("config", overrides=overrides))
    return memory, _mapped(overrides, cache, chunk_rows)


def _assert_same_batches(a, b) -> None:
    assert a.schema == b.schema and a.preprocessor.state_dict() == b.preprocessor.state_dict()
    for split, shuffle in (("train", True), ("val", False), ("test", False)):
        for epoch in range(2):
            pairs = list(zip(a._loader(split, 128, shuffle), b._loader(split, 128, shuffle), strict=True))
            assert pairs
            for x, y in pairs:
                for group in ("features", "labels", "masks"):
                    gx, gy = getattr(x, group), getattr(y, group)
                    assert gx.keys() == gy.keys()
                    for key in gx:
                        assert gx[key].dtype == gy[key].dtype and torch.equal(gx[key], gy[key]), (split, group, key)


@pytest.mark.parametrize("read_above", [MemmapTable.READ_ABOVE_BYTES, 0], ids=["mapped", "pread"])
def test_the_memory_map_gives_the_in_memory_batches(files, tmp_path, monkeypatch, read_above) -> None:
    monkeypatch.setattr(BlockMoments, "BLOCK", 500)  # several blocks, merged: the path a large file takes
    monkeypatch.setattr(MemmapTable, "READ_ABOVE_BYTES", read_above)  # 0: every group read by pread
    memory, mapped = _datamodules(_overrides(files), tmp_path / "cache")
    assert type(mapped).__name__ == "ColumnarDataModule"
    assert {s: len(t) for s, t in mapped.tables.items()} == {"train": 3000, "val": 600, "test": 600}
    assert mapped.tables["train"].features["categorical"].dtype == torch.int32  # stored narrow, served as int64
    assert bool(mapped.tables["train"]._readers) == (read_above == 0)
    _assert_same_batches(memory, mapped)


@pytest.mark.parametrize("name", ["aliccp", "aliexpress"])
def test_the_memory_map_gives_the_in_memory_batches_on_the_samples(name, tmp_path) -> None:
    memory, mapped = _datamodules(sample_overrides(name), tmp_path, chunk_rows=7)
    _assert_same_batches(memory, mapped)


def test_streaming_statistics_equal_the_in_memory_ones() -> None:
    x = np.random.default_rng(0).lognormal(3, 2, 300_000)
    x[::11] = np.nan
    whole = BlockMoments()
    whole.add(x)
    assert whole.finish() == (np.nanmean(x), np.nanstd(x))  # up to one block: numpy's own numbers
    chunked = BlockMoments()
    for start in range(0, len(x), 4_099):
        chunked.add(x[start : start + 4_099])
    assert chunked.finish() == (np.nanmean(x), np.nanstd(x))
    blocks = BlockMoments()
    blocks.BLOCK = 10_000
    for start in range(0, len(x), 777):
        blocks.add(x[start : start + 777])
    mean, std = blocks.finish()
    assert mean == pytest.approx(np.nanmean(x), rel=1e-12) and std == pytest.approx(np.nanstd(x), rel=1e-12)


def test_the_cache_is_reused_and_rebuilt_when_a_source_file_changes(files, tmp_path, capsys) -> None:
    cache = tmp_path / "cache"
    _datamodules(_overrides(files), cache)
    assert "converted" in capsys.readouterr().out
    _datamodules(_overrides(files), cache)
    assert "up to date" in capsys.readouterr().out
    stat = (files / "val.csv").stat()
    os.utime(files / "val.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _, mapped = _datamodules(_overrides(files), cache)
    assert "converted" in capsys.readouterr().out
    assert len(list(cache.iterdir())) == 2  # one folder per (files, declaration); none half-written


def test_a_bad_row_in_a_late_chunk_leaves_no_cache(files, tmp_path) -> None:
    test = pd.read_csv(files / "test.csv")
    test.loc[590, "click"] = 3
    test.to_csv(files / "test.csv", index=False)
    with pytest.raises(SchemaError, match=r"binary task needs 0/1 labels; row 590"):
        _mapped(_overrides(files), tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_kinds_that_cannot_stream_are_refused_in_one_line(files, tmp_path) -> None:
    with pytest.raises(SchemaError, match=r"text \(shop\) cannot be fit one chunk at a time"):
        _mapped(_overrides(files, features="{categorical: [user], text: [shop]}"), tmp_path / "cache")
    with pytest.raises(SchemaError, match="a ratio split needs every row at once"):
        _mapped(_overrides(files, files="train.parquet"), tmp_path / "cache")


def test_training_out_of_core_ends_with_the_in_memory_metrics(tmp_path) -> None:
    base = [*sample_overrides("aliccp"), "arch=esmm", "arch.tower_units=[16]", "trainer.max_epochs=2", "logger=none",
            "print_results=false"]
    memory, _ = train_in_process(tmp_path / "memory", base)
    mapped, _ = train_in_process(tmp_path / "mapped", [*base, "data.out_of_core.enabled=true",
                                                       f"data.out_of_core.cache_dir={tmp_path / 'cache'}"])
    assert mapped["metrics"] == memory["metrics"] and mapped["config_hash"] == memory["config_hash"]


def test_a_mapped_split_moved_whole_has_the_dtypes_and_values_of_its_batches(files, tmp_path) -> None:
    """What the tables on a GPU hold (``data.loader.on_device``): the stored narrow columns widened."""
    mapped = _mapped(_overrides(files), tmp_path / "cache")
    table = mapped.tables["train"]
    whole, gathered = table.to("cpu"), table[torch.arange(len(table))]
    assert type(whole).__name__ == "TensorTable" and len(whole) == len(table)
    assert whole.nbytes == sum(t.numel() * t.element_size() for g in (whole.features, whole.labels, whole.masks)
                               for t in g.values())
    for group in ("features", "labels", "masks"):
        a, b = getattr(whole, group), getattr(gathered, group)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (group, key)
