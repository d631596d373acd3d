"""Preprocessing: statistics fit on the training split only, OOV ids, persistence, label checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec


@pytest.fixture
def cats(tiny_categories) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    return tiny_categories["colors"], tiny_categories["cities"], tiny_categories["unseen"]


def _fit(raw) -> Preprocessor:
    return Preprocessor(raw.schema).fit(raw.splits["train"], split="train")


def test_vocabularies_and_field_sizes_come_from_train(tiny_raw, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    pre = _fit(tiny_raw)
    assert pre.transformers["categorical"].vocabularies == {"color": sorted(COLORS), "city": sorted(CITIES)}
    assert pre.transformers["categorical"].field_sizes == [len(COLORS) + 1, len(CITIES) + 1]  # + OOV
    assert UNSEEN_CITY in set(tiny_raw.splits["val"]["city"])


def test_known_categories_map_to_offset_plus_rank(tiny_raw, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    pre = _fit(tiny_raw)
    frame = tiny_raw.splits["train"].iloc[:50]
    cat = pre.transform(frame).features["categorical"]
    colors, cities = sorted(COLORS), sorted(CITIES)
    expected_color = [1 + colors.index(c) for c in frame["color"]]
    expected_city = [len(COLORS) + 1 + 1 + cities.index(c) for c in frame["city"]]
    assert cat.dtype == torch.int64
    assert cat[:, 0].tolist() == expected_color
    assert cat[:, 1].tolist() == expected_city


def test_category_seen_only_in_val_maps_to_the_fields_oov_id(tiny_raw, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    pre = _fit(tiny_raw)
    val = tiny_raw.splits["val"]
    cat = pre.transform(val, split="val").features["categorical"]
    unseen = torch.tensor((val["city"] == UNSEEN_CITY).to_numpy())
    assert unseen.sum() > 0
    city_offset = pre.transformers["categorical"].field_sizes[0]  # the city field starts after the color field
    assert (cat[unseen, 1] == city_offset).all()  # id 0 of the city field
    assert (cat[~unseen, 1] > city_offset).all()
    assert (cat[:, 1] < city_offset + pre.transformers["categorical"].field_sizes[1]).all()
    # an unseen value in the first field maps to global id 0
    odd = val.iloc[:3].copy()
    odd["color"] = "purple"
    assert pre.transform(odd).features["categorical"][:, 0].tolist() == [0, 0, 0]


def test_numeric_stats_are_the_train_ones(tiny_raw) -> None:
    pre = _fit(tiny_raw)
    train, val = tiny_raw.splits["train"], tiny_raw.splits["val"]
    age = train["age"].to_numpy()
    log_income = np.log1p(train["income"].to_numpy())  # income > 0, so sign(x)·log1p(|x|) = log1p(x)
    assert pre.transformers["numeric"].stats["age"] == pytest.approx((age.mean(), age.std()), rel=1e-12)
    assert pre.transformers["numeric"].stats["income"] == pytest.approx((log_income.mean(), log_income.std()), rel=1e-12)
    # val is standardised with train's statistics, not its own
    num = pre.transform(val, split="val").features["numeric"]
    expected_age = (val["age"].to_numpy() - age.mean()) / age.std()
    expected_income = (np.log1p(val["income"].to_numpy()) - log_income.mean()) / log_income.std()
    np.testing.assert_allclose(num[:, 0].numpy(), expected_age, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(num[:, 1].numpy(), expected_income, rtol=1e-5, atol=1e-5)
    assert abs(float(num[:, 0].mean())) > 1e-3  # val's own mean would give exactly 0
    assert num.dtype == torch.float32


def test_stats_ignore_other_splits(tiny_raw, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    pre = _fit(tiny_raw)
    polluted = tiny_raw.splits["train"].copy()
    both = Preprocessor(tiny_raw.schema).fit(pd.concat([polluted, tiny_raw.splits["val"]]))
    assert both.transformers["numeric"].stats["age"] != pre.transformers["numeric"].stats["age"]
    both_cities, cities = both.transformers["categorical"].vocabularies["city"], pre.transformers["categorical"].vocabularies["city"]
    assert UNSEEN_CITY in both_cities and UNSEEN_CITY not in cities


def test_datamodule_fits_on_train_only(tiny_raw, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    dm = TabularDataModule(tiny_raw, batch_size=64, eval_batch_size=100, seed=0)
    dm.setup()
    age = tiny_raw.splits["train"]["age"].to_numpy()
    assert dm.preprocessor.transformers["numeric"].stats["age"] == pytest.approx((age.mean(), age.std()), rel=1e-12)
    assert UNSEEN_CITY not in dm.preprocessor.transformers["categorical"].vocabularies["city"]
    assert {s: len(t) for s, t in dm.tables.items()} == {"train": 512, "val": 128, "test": 128}
    assert dm.labelled_counts() == {
        "ctr": 512,
        "cvr": int(tiny_raw.splits["train"]["click"].sum()),
        "kind": 512,
        "spend": int(tiny_raw.splits["train"]["click"].sum()),
    }


def test_saved_preprocessor_round_trips(tiny_raw, tmp_path, cats) -> None:
    COLORS, CITIES, UNSEEN_CITY = cats
    pre = _fit(tiny_raw)
    path = tmp_path / "run" / "preprocessor.json"
    pre.save(path)
    state = json.loads(path.read_text())
    assert state["format"] == 2
    assert state["columns"]["categorical"]["state"]["vocabularies"]["city"] == sorted(CITIES)
    assert [p.name for p in path.parent.iterdir()] == ["preprocessor.json"]  # no temp file left
    loaded = Preprocessor.load(path, tiny_raw.schema)
    assert loaded.transformers["categorical"].vocabularies == pre.transformers["categorical"].vocabularies
    assert loaded.transformers["numeric"].stats == pre.transformers["numeric"].stats
    assert loaded.transformers["categorical"].field_sizes == pre.transformers["categorical"].field_sizes
    new = tiny_raw.splits["test"]
    a, b = pre.transform(new, split="test"), loaded.transform(new, split="test")
    assert torch.equal(a.features["categorical"], b.features["categorical"])
    assert torch.equal(a.features["numeric"], b.features["numeric"])
    for task in a.labels:
        assert torch.equal(a.labels[task], b.labels[task])
    assert set(a.masks) == set(b.masks) == {"cvr", "spend"}
    # scoring new data without labels
    unlabelled = new.drop(columns=["click", "buy", "kind", "spend"])
    c = loaded.transform(unlabelled, with_labels=False)
    assert torch.equal(c.features["categorical"], a.features["categorical"]) and c.labels == {}


def test_load_rejects_a_mismatched_schema(tiny_raw, tmp_path) -> None:
    path = tmp_path / "pre.json"
    _fit(tiny_raw).save(path)
    fewer = Schema(features=(FeatureSpec("age", "numeric"),), tasks=(TaskSpec("y", "binary", "click"),), main_task="y")
    with pytest.raises(SchemaError, match=r"saved preprocessing is for inputs \{'categorical': \('categorical', \['color', 'city'\]\).*"
                       r"but the schema has \{'numeric': \('numeric', \['age'\]\)\} and"):
        Preprocessor.load(path, fewer)


def test_load_rejects_renamed_features(tiny_raw, tmp_path) -> None:
    path = tmp_path / "pre.json"
    _fit(tiny_raw).save(path)
    renamed = Schema(
        features=(
            FeatureSpec("colour", "categorical"),
            FeatureSpec("city", "categorical"),
            FeatureSpec("age", "numeric"),
            FeatureSpec("income", "numeric", {"log1p": True}),
        ),
        tasks=tiny_raw.schema.tasks,
        main_task="ctr",
    )
    with pytest.raises(SchemaError, match="colour"):
        Preprocessor.load(path, renamed)


def test_transform_before_fit_is_an_error(tiny_raw) -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        Preprocessor(tiny_raw.schema).transform(tiny_raw.splits["train"])


def test_masked_labels_may_be_missing_outside_their_mask(tiny_preprocessed, tiny_raw) -> None:
    _, tables = tiny_preprocessed
    train = tiny_raw.splits["train"]
    click = train["click"].to_numpy() == 1
    assert train["spend"].isna().sum() == (~click).sum() > 0
    t = tables["train"]
    assert torch.equal(t.masks["spend"], torch.from_numpy(click))
    assert (t.labels["spend"][~t.masks["spend"]] == 0).all()
    np.testing.assert_allclose(t.labels["spend"][t.masks["spend"]].numpy(), train["spend"].to_numpy()[click], rtol=1e-6)
    assert t.labels["kind"].dtype == torch.int64 and t.labels["ctr"].dtype == torch.float32
    assert t.labelled_counts()["cvr"] == int(click.sum())


def test_nan_label_names_the_column_and_row(tiny_raw) -> None:
    pre = _fit(tiny_raw)
    frame = tiny_raw.splits["val"].copy()
    frame.loc[frame.index[3], "click"] = np.nan
    with pytest.raises(SchemaError) as err:
        pre.transform(frame, split="val")
    assert "val: label column 'click' (task 'ctr') has 1 row(s) with a missing value, first at row 3" in str(err.value)
    frame = tiny_raw.splits["val"].copy()
    frame.loc[frame.index[5], "kind"] = np.nan
    with pytest.raises(SchemaError, match=r"val: label column 'kind' \(task 'kind'\) has 1 row\(s\) with a missing value, first at row 5"):
        pre.transform(frame, split="val")


def test_nan_label_of_unmasked_task_names_the_column() -> None:
    schema = Schema(features=(FeatureSpec("x", "numeric"),), tasks=(TaskSpec("y", "regression", "target"),), main_task="y")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "target": [1.0, np.nan, np.nan]})
    with pytest.raises(SchemaError, match=r"label column 'target' \(task 'y'\) has 2 row\(s\) with a missing value, first at row 1"):
        Preprocessor(schema).fit(frame).transform(frame, split="train")


def test_missing_columns_are_named(tiny_raw) -> None:
    train = tiny_raw.splits["train"]
    with pytest.raises(SchemaError, match=r"train: column\(s\) \['age'\] missing"):
        Preprocessor(tiny_raw.schema).fit(train.drop(columns=["age"]), split="train")
    pre = _fit(tiny_raw)
    with pytest.raises(SchemaError, match=r"test: column\(s\) \['city'\] missing"):
        pre.transform(train.drop(columns=["city"]), split="test")
    with pytest.raises(SchemaError, match=r"val: column\(s\) \['spend'\] missing"):
        pre.transform(train.drop(columns=["spend"]), split="val")
    with pytest.raises(SchemaError, match=r"\['buy'\] missing"):
        pre.transform(train.drop(columns=["buy"]))


def test_bad_label_values_are_rejected(tiny_raw) -> None:
    pre = _fit(tiny_raw)
    frame = tiny_raw.splits["val"].copy()
    frame.loc[frame.index[0], "click"] = 2.0
    with pytest.raises(SchemaError, match=r"label column 'click' \(task 'ctr'\): a binary task needs 0/1 labels; row 0 holds 2 "):
        pre.transform(frame)
    masked = Schema(features=(FeatureSpec("x", "numeric"),), tasks=(TaskSpec("y", "regression", "lbl", mask="m"),), main_task="y")
    good = Preprocessor(masked).fit(pd.DataFrame({"x": [1.0, 2.0], "lbl": [0.5, 1.5], "m": [1.0, 0.0]}))
    for bad in (2.0, np.nan):
        df = pd.DataFrame({"x": [1.0, 2.0], "lbl": [0.5, 1.5], "m": [1.0, bad]})
        with pytest.raises(SchemaError, match=rf"val: mask column 'm' of task 'y' must hold 0 or 1 on every row; row 1 holds {bad}"):
            good.transform(df, split="val")
        with pytest.raises(SchemaError, match="train: mask column 'm' of task 'y' must hold 0 or 1 on every row; row 1"):
            Preprocessor(masked).fit(df, split="train")  # fitting reads the task's sample space too
    frame = tiny_raw.splits["val"].copy()
    frame["kind"] = frame["kind"].astype(float)
    frame.loc[frame.index[0], "kind"] = 3.0
    with pytest.raises(SchemaError, match=r"label column 'kind' \(task 'kind'\): row 0 holds 3, not an integer class id in \[0, 3\)"):
        pre.transform(frame)
    frame.loc[frame.index[0], "kind"] = 0.5
    with pytest.raises(SchemaError, match=r"holds 0.5, not an integer class id in \[0, 3\)"):
        pre.transform(frame)
    schema = Schema(features=(FeatureSpec("x", "numeric"),), tasks=(TaskSpec("y", "binary", "lbl"),), main_task="y")
    df = pd.DataFrame({"x": [1.0, 2.0], "lbl": [0.0, 0.5]})
    with pytest.raises(SchemaError, match=r"label column 'lbl' \(task 'y'\): a binary task needs 0/1 labels; row 1 holds 0.5 "):
        Preprocessor(schema).fit(df).transform(df)


def test_non_numeric_numeric_feature_is_named() -> None:
    schema = Schema(features=(FeatureSpec("zip", "numeric"),), tasks=(TaskSpec("y", "binary", "lbl"),), main_task="y")
    df = pd.DataFrame({"zip": ["1000", "AB-12"], "lbl": [0.0, 1.0]})
    with pytest.raises(SchemaError, match="numeric feature 'zip' holds non-numeric values"):
        Preprocessor(schema).fit(df)


def test_missing_numeric_becomes_train_mean_and_min_count_prunes() -> None:
    schema = Schema(
        features=(FeatureSpec("c", "categorical"), FeatureSpec("x", "numeric")),
        tasks=(TaskSpec("y", "regression", "lbl"),),
        main_task="y",
    )
    pruned = Schema(  # min_count is a per-feature option of categoricals
        features=(FeatureSpec("c", "categorical", {"min_count": 2}), FeatureSpec("x", "numeric")),
        tasks=schema.tasks,
        main_task="y",
    )
    train = pd.DataFrame({"c": ["a", "a", "b", "c", "c", "c"], "x": [1.0, 2.0, np.nan, 3.0, 4.0, 5.0], "lbl": [0.0] * 6})
    pre = Preprocessor(pruned).fit(train)
    assert pre.transformers["categorical"].vocabularies["c"] == ["a", "c"]  # "b" seen once < min_count -> OOV
    assert pre.transformers["numeric"].stats["x"] == pytest.approx((3.0, np.std([1.0, 2.0, 3.0, 4.0, 5.0])))
    t = pre.transform(train)
    assert t.features["categorical"][:, 0].tolist() == [1, 1, 0, 2, 2, 2]
    assert t.features["numeric"][2, 0].item() == 0.0
    constant = Preprocessor(schema).fit(train.assign(x=7.0))
    assert constant.transformers["numeric"].stats["x"] == (7.0, 1.0)  # zero std falls back to 1, no division by zero


def test_signed_log1p_on_negative_values() -> None:
    schema = Schema(features=(FeatureSpec("g", "numeric", {"log1p": True}),), tasks=(TaskSpec("y", "regression", "lbl"),), main_task="y")
    train = pd.DataFrame({"g": [-100.0, 0.0, 100.0, 1000.0], "lbl": [0.0] * 4})
    pre = Preprocessor(schema).fit(train)
    g = train["g"].to_numpy()
    v = np.sign(g) * np.log1p(np.abs(g))
    assert pre.transformers["numeric"].stats["g"] == pytest.approx((v.mean(), v.std()))


def test_integer_coded_category_survives_a_missing_value_in_another_split() -> None:
    schema = Schema(features=(FeatureSpec("code", "categorical"),), tasks=(TaskSpec("y", "regression", "lbl"),), main_task="y")
    train = pd.DataFrame({"code": [1, 2, 3, 1], "lbl": [0.0] * 4})
    val = pd.DataFrame({"code": [1, 2, np.nan, 3], "lbl": [0.0] * 4})
    pre = Preprocessor(schema).fit(train)
    assert pre.transform(val).features["categorical"][:, 0].tolist() == [1, 2, 0, 3]
