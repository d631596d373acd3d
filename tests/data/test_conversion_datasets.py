"""The click-to-conversion datasets on their shipped samples (Ali-CCP, AliExpress, KuaiRand), and
the loader options they use: derived labels with ``per``/``where``, validation carved from train."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular import load_tabular
from mtlrec.data.tabular.splits import carved_to_validation
from mtlrec.train import CONFIG_DIR
from tests.conftest import SHARED_DATA, sample_overrides


def _datamodule(name: str, *extra: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*sample_overrides(name), *extra])
    return build_datamodule(cfg)


def test_aliccp_sample_tasks_and_sample_spaces() -> None:
    dm = _datamodule("aliccp")
    assert {s: len(t) for s, t in dm.tables.items()} == {"train": 100, "val": 50, "test": 50}
    spaces = {t.name: (t.mask, t.space) for t in dm.schema.tasks}
    assert spaces == {"click": (None, "impressions"), "cvr": ("click", "clicked"), "ctcvr": (None, "impressions")}
    raw = pd.read_csv(SHARED_DATA / "ali-ccp" / "ali_ccp_train_sample.csv")
    train = dm.tables["train"]
    assert torch.equal(train.labels["click"], torch.tensor(raw["click"].to_numpy(), dtype=torch.float32))
    ctcvr = torch.tensor((raw["click"] * raw["purchase"]).to_numpy(), dtype=torch.float32)
    assert torch.equal(train.labels["ctcvr"], ctcvr)
    assert torch.equal(train.masks["cvr"], torch.tensor(raw["click"].to_numpy() == 1))
    assert (int(train.labels["click"].sum()), int(train.labels["ctcvr"].sum())) == (7, 1)  # as its README says
    assert train.features["categorical"].shape == (100, 23) and train.features["numeric"].shape == (100, 8)
    assert dm.labelled_counts() == {"click": 100, "cvr": 7, "ctcvr": 100}


def test_aliexpress_carves_validation_from_train_never_from_test() -> None:
    dm = _datamodule("aliexpress")
    raw = pd.read_csv(SHARED_DATA / "aliexpress" / "aliexpress_train_sample.csv")
    to_val = carved_to_validation(np.arange(len(raw)), 0.2, 2)
    assert (len(dm.tables["train"]), len(dm.tables["val"]), len(dm.tables["test"])) == (int((~to_val).sum()),
                                                                                         int(to_val.sum()), 20)
    clicks = torch.tensor(raw["click"][to_val].to_numpy(), dtype=torch.float32)
    assert torch.equal(dm.tables["val"].labels["click"], clicks)
    assert dm.raw.sources["val"].endswith("a 0.2 share of its rows (hashed row numbers, seed 2)")
    assert "aliexpress_test_sample.csv" in dm.raw.sources["test"]
    assert dm.raw.name == "aliexpress_NL"
    assert "search_id" not in {f.name for f in dm.schema.features}


def test_the_carve_is_seeded_stable_and_about_its_share() -> None:
    rows = np.arange(100_000)
    a = carved_to_validation(rows, 0.1, 0)
    assert abs(a.mean() - 0.1) < 0.005
    assert np.array_equal(a, carved_to_validation(rows, 0.1, 0))
    assert not np.array_equal(a, carved_to_validation(rows, 0.1, 1))
    # a chunk decides its rows exactly as the whole file does
    assert np.array_equal(a[40_000:41_000], carved_to_validation(rows[40_000:41_000], 0.1, 0))


def test_aliexpress_names_the_countries_on_a_bad_one() -> None:
    with pytest.raises(SchemaError, match=r"data.country='DE'.*NL, ES, FR, US"):
        _datamodule("aliexpress", "data.country=DE")


@pytest.mark.parametrize("share,positives", [(0.3, 20), (0.5, 13)])
def test_kuairand_long_view_threshold_is_configurable(share, positives) -> None:
    dm = _datamodule("kuairand", f"data.derived.long_view_share.value={share}")
    raw = pd.read_csv(SHARED_DATA / "kuairand" / "kuairand_sample.csv")
    kept = raw[raw["duration_ms"] > 0]
    assert sum(len(t) for t in dm.tables.values()) == len(kept) == 182  # zero durations have no share
    total = sum(int(t.labels["long_view"].sum()) for t in dm.tables.values())
    assert total == positives == int((kept["play_time_ms"] / kept["duration_ms"] >= share).sum())
    play = torch.cat([t.labels["play_time"] for t in dm.tables.values()]).sort().values
    assert torch.allclose(play, torch.tensor(np.sort(np.log1p(kept["play_time_ms"].to_numpy())), dtype=torch.float32))
    names = {f.name for f in dm.schema.features}
    assert not names & {"play_time_ms", "profile_stay_time", "comment_stay_time", "is_click"}


def _write(tmp_path, frame: pd.DataFrame) -> str:
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_derived_where_and_per(tmp_path) -> None:
    frame = pd.DataFrame({"u": list("abcdefgh") * 4, "click": [0, 1] * 16, "buy": [1, 1, 0, 0] * 8,
                          "play": [5.0, 10.0, 1.0, 0.0] * 8, "dur": [10.0, 10.0, 4.0, 0.0] * 8})
    raw = load_tabular(_write(tmp_path, frame), {"categorical": ["u"]},
                       [{"name": "ctcvr", "kind": "binary", "label": "ctcvr"}, {"name": "lv", "kind": "binary"}],
                       "ctcvr", split={"ratios": [0.5, 0.25, 0.25]},
                       derived={"ctcvr": {"from": "buy", "op": "==", "value": 1, "where": "click"},
                                "lv": {"from": "play", "per": "dur", "op": ">=", "value": 0.5}}, dropna=["lv"])
    whole = pd.concat(raw.splits.values()).sort_index()
    assert len(whole) == 24  # the zero-duration rows have no share: dropped by dropna
    assert (whole["ctcvr"] == whole["click"] * whole["buy"]).all()
    assert (whole["lv"] == (whole["play"] / whole["dur"] >= 0.5)).all()
    assert {"buy", "play"} <= set(raw.schema.excluded)


def test_derived_where_refuses_a_gate_that_is_not_zero_one(tmp_path) -> None:
    frame = pd.DataFrame({"u": ["a", "b"] * 4, "click": [0, 2] * 4, "buy": [1, 0] * 4})
    with pytest.raises(SchemaError, match=r"data.derived.ctcvr.where: 'click' .* must hold 0 or 1"):
        load_tabular(_write(tmp_path, frame), {"categorical": ["u"]}, [{"name": "ctcvr", "kind": "binary"}], "ctcvr",
                     derived={"ctcvr": {"from": "buy", "op": "==", "value": 1, "where": "click"}})


def test_val_share_only_with_train_and_test_files(tmp_path) -> None:
    frame = pd.DataFrame({"u": ["a", "b"] * 4, "y": [0, 1] * 4})
    with pytest.raises(SchemaError, match="data.split.val_share carves validation out of the train file"):
        load_tabular(_write(tmp_path, frame), {"categorical": ["u"]}, [{"name": "y", "kind": "binary"}], "y",
                     split={"val_share": 0.1})
