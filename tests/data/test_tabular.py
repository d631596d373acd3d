"""load_tabular: a dataset declared in YAML only (conf/data/tabular.yaml).

Expected values are computed here from the small frame each test writes (by plain Python over
its rows), never with the loader's own pandas code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular import load_tabular

CONF = Path(__file__).resolve().parents[2] / "conf"
N = 40

FEATURES = {
    "categorical": ["item_id", "color"],
    "numeric": ["age", {"name": "price", "log1p": True}],
    "multi_hot": [{"name": "genres", "separator": "|"}],
    "text": [{"name": "title", "min_count": 1}],
}
TASKS = [
    {"name": "like", "kind": "binary", "label": "like"},
    {"name": "rating", "kind": "multiclass", "label": "rating", "classes": [1, 2, 3, 4, 5]},
    {"name": "tags", "kind": "multilabel", "label": "tags", "separator": "|"},
    {"name": "cvr", "kind": "binary", "label": "buy", "mask": "click"},
]
LIKE = {"like": {"from": "rating", "op": ">=", "value": 4}}


def interactions(n: int = N, seed: int = 0) -> pd.DataFrame:
    """``n`` rows with every column kind; ``rid`` is the file row, ``ts`` a shuffled date."""
    rng = np.random.default_rng(seed)
    click = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "rid": np.arange(n),
            "user_id": rng.integers(1, 6, n),
            "item_id": rng.choice(["i1", "i2", "i3", "i4"], n),
            "color": rng.choice(["red", "blue", "green"], n),
            "price": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(3.0, 1.0, n)),
            "rating": rng.integers(1, 6, n),
            "genres": rng.choice(["drama|comedy", "drama", "action|drama|kids", "kids"], n),
            "title": rng.choice(["Great shoes", "bad fit, great color", "great", "meh shoes"], n),
            "tags": rng.choice(["tops|knits", "tops", "dresses"], n),
            "click": click,
            "buy": click * rng.integers(0, 2, n),
            "ts": [str(d.date()) for d in pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.permutation(n), "D")],
            "part": rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2]),
        }
    )


USERS = pd.DataFrame({"user_id": [5, 3, 1, 4, 2], "age": [50, 30, 10, 40, 20], "country": list("ecadb")})


def write(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    name = path.name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if ".tsv" in name else kwargs.pop("sep", ","), **kwargs)
    return path


def load(tmp_path: Path, files="i.csv", write_missing: bool = True, **kwargs) -> RawDataset:
    """The full example dataset (interactions + users join + derived like) from ``tmp_path``;
    the files a test has not written are written first, unless ``write_missing`` is false."""
    if not (tmp_path / "u.csv").exists():
        write(USERS, tmp_path / "u.csv")
    if write_missing and isinstance(files, str) and not (tmp_path / files).exists():
        write(interactions(), tmp_path / files)
    args = dict(
        files=files, features=FEATURES, tasks=TASKS, main_task="like", root=str(tmp_path),
        joins=[{"path": "u.csv", "key": "user_id"}], derived=LIKE,
    )  # fmt: skip
    args.update(kwargs)
    return load_tabular(**args)


def error_of(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def tensors(ds: RawDataset) -> dict[str, dict[str, torch.Tensor]]:
    pre = Preprocessor(ds.schema).fit(ds.splits["train"], split="train")
    out = {}
    for split, frame in ds.splits.items():
        table = pre.transform(frame, split=split)
        out[split] = {
            **{f"feature/{k}": v for k, v in table.features.items()},
            **{f"label/{k}": v for k, v in table.labels.items()},
            **{f"mask/{k}": v for k, v in table.masks.items()},
        }
    return out


# -- formats ----------------------------------------------------------------------------------------
def test_csv_tsv_parquet_and_gzip_give_identical_frames_and_tensors(tmp_path) -> None:
    data = interactions()
    names = ["i.csv", "i.tsv", "i.parquet", "i.csv.gz"]
    for name in names:
        write(data, tmp_path / name)
    loaded = {name: load(tmp_path, files=name, split={"kind": "ratio", "seed": 3}) for name in names}
    reference = loaded["i.csv"]
    expected = tensors(reference)
    assert set(expected["train"]) == {
        "feature/categorical", "feature/numeric", "feature/genres", "feature/title",
        "label/like", "label/rating", "label/tags", "label/cvr", "mask/cvr",
    }  # fmt: skip
    for name in names[1:]:
        for split in ("train", "val", "test"):
            pd.testing.assert_frame_equal(loaded[name].splits[split], reference.splits[split], check_exact=True)
        got = tensors(loaded[name])
        for split, group in expected.items():
            assert set(got[split]) == set(group)
            for key, tensor in group.items():
                assert got[split][key].dtype == tensor.dtype and torch.equal(got[split][key], tensor), (name, key)
    assert reference.splits["train"]["rating"].dtype == np.int64
    assert reference.splits["train"]["price"].dtype == np.float64


def test_parquet_with_narrow_and_nullable_types_reads_as_int64_float64(tmp_path) -> None:
    frame = pd.DataFrame({
        "a": np.array([1, 2, 3, 4], dtype=np.int32), "b": pd.array([1, None, 3, 4], dtype="Int64"),
        "c": np.array([0.5, 1.5, 2.5, 3.5], dtype=np.float32), "d": pd.Categorical(["x", "y", "x", "y"]),
        "y": [0, 1, 0, 1],
    })  # fmt: skip
    write(frame, tmp_path / "n.parquet")
    ds = load_tabular("n.parquet", {"numeric": ["a", "b", "c"], "categorical": ["d"]}, [{"name": "y", "kind": "binary"}],
                      "y", root=str(tmp_path), split={"ratios": [0.5, 0.25, 0.25]})  # fmt: skip
    full = pd.concat(ds.splits.values())
    assert full["a"].dtype == np.int64 and full["b"].dtype == np.float64 and full["c"].dtype == np.float64
    assert full["b"].isna().sum() == 1 and not isinstance(full["d"].dtype, pd.CategoricalDtype)


def test_rename_and_headerless_files_with_names(tmp_path) -> None:
    (tmp_path / "r.csv").write_text("Item ID,Recommended IND\na,1\nb,0\nc,1\nd,0\n")
    (tmp_path / "h.tsv").write_text("a\t1\nb\t0\nc\t1\nd\t0\n")
    common = dict(features={"categorical": ["item"]}, tasks=[{"name": "rec", "kind": "binary", "label": "recommended"}],
                  main_task="rec", root=str(tmp_path), split={"ratios": [0.5, 0.25, 0.25]})  # fmt: skip
    renamed = load_tabular("r.csv", reader={"rename": {"Item ID": "item", "Recommended IND": "recommended"}}, **common)
    headerless = load_tabular("h.tsv", reader={"header": False, "names": ["item", "recommended"]}, **common)
    for ds in (renamed, headerless):
        full = pd.concat(ds.splits.values()).sort_values("item")
        assert full["item"].tolist() == ["a", "b", "c", "d"] and full["recommended"].tolist() == [1, 0, 1, 0]
    explicit = load_tabular("h.tsv", reader={"format": "tsv", "header": False, "names": ["item", "recommended"]}, **common)
    pd.testing.assert_frame_equal(explicit.splits["train"], headerless.splits["train"])


def test_an_explicit_delimiter_is_used(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("item;y\na;1\nb;0\nc;1\nd;0\n")
    ds = load_tabular("s.txt", {"categorical": ["item"]}, [{"name": "y", "kind": "binary"}], "y", root=str(tmp_path),
                      reader={"format": "csv", "delimiter": ";"}, split={"ratios": [0.5, 0.25, 0.25]})  # fmt: skip
    assert sorted(pd.concat(ds.splits.values())["item"]) == ["a", "b", "c", "d"]


# -- joins ------------------------------------------------------------------------------------------
def test_join_puts_each_side_row_on_its_interactions(tmp_path) -> None:
    ds = load(tmp_path)
    age = dict(zip(USERS["user_id"], USERS["age"]))
    country = dict(zip(USERS["user_id"], USERS["country"]))
    for frame in ds.splits.values():
        assert frame["age"].tolist() == [age[u] for u in frame["user_id"]]
        assert frame["country"].tolist() == [country[u] for u in frame["user_id"]]
    assert sum(len(f) for f in ds.splits.values()) == N  # one row per interaction


def test_join_with_different_key_names_and_selected_columns(tmp_path) -> None:
    write(interactions().rename(columns={"user_id": "uid"}), tmp_path / "i.csv")
    write(USERS, tmp_path / "u.csv")
    ds = load(tmp_path, joins=[{"path": "u.csv", "key": {"left": "uid", "right": "user_id"}, "columns": ["age"]}])
    age = dict(zip(USERS["user_id"], USERS["age"]))
    frame = ds.splits["train"]
    assert "country" not in frame and "user_id" not in frame
    assert frame["age"].tolist() == [age[u] for u in frame["uid"]]


# -- derived labels ---------------------------------------------------------------------------------
NUM = [1.0, 4.0, np.nan, 5.0, 3.0]
TEXT = ["red", "blue", None, "red", "green"]


@pytest.mark.parametrize(
    "column, op, value, expected",
    [
        ("num", ">", 3, [0, 1, None, 1, 0]),
        ("num", ">=", 4, [0, 1, None, 1, 0]),
        ("num", "<", 4, [1, 0, None, 0, 1]),
        ("num", "<=", 3, [1, 0, None, 0, 1]),
        ("num", "==", 5, [0, 0, None, 1, 0]),
        ("num", "!=", 5, [1, 1, None, 0, 1]),
        ("num", "in", [1, 3], [1, 0, None, 0, 1]),
        ("num", "not_in", [1, 3], [0, 1, None, 1, 0]),
        ("text", "==", "red", [1, 0, None, 1, 0]),
        ("text", "!=", "red", [0, 1, None, 0, 1]),
        ("text", "in", ["blue", "green"], [0, 1, None, 0, 1]),
        ("text", "not_in", ["blue", "green"], [1, 0, None, 1, 0]),
        ("code", "in", [10, 30], [1, 0, 1, 0, 1]),  # text codes compare as text, the YAML numbers too
    ],
)
def test_derived_ops(tmp_path, column, op, value, expected) -> None:
    frame = pd.DataFrame({"num": NUM, "text": TEXT, "code": ["10", "20", "30", "x", "10"], "f": [1, 2, 3, 4, 5]})
    write(frame, tmp_path / "d.csv")
    ds = load_tabular({s: "d.csv" for s in ("train", "val", "test")}, {"numeric": ["f"]},
                      [{"name": "t", "kind": "binary", "label": "y"}], "t", root=str(tmp_path),
                      derived={"y": {"from": column, "op": op, "value": value}})  # fmt: skip
    got = ds.splits["train"]["y"]
    assert got.dtype == np.float64
    assert [None if np.isnan(v) else int(v) for v in got] == expected
    assert ds.schema.task("t").source == column and column in ds.schema.forbidden_feature_columns


def test_a_missing_source_value_is_a_missing_label_not_a_negative(tmp_path) -> None:
    write(pd.DataFrame({"num": NUM, "f": [1, 2, 3, 4, 5]}), tmp_path / "d.csv")
    ds = load_tabular({s: "d.csv" for s in ("train", "val", "test")}, {"numeric": ["f"]},
                      [{"name": "t", "kind": "binary", "label": "y"}], "t", root=str(tmp_path),
                      derived={"y": {"from": "num", "op": ">=", "value": 4}})  # fmt: skip
    with pytest.raises(SchemaError, match="missing value"):
        Preprocessor(ds.schema).fit(ds.splits["train"]).transform(ds.splits["train"], split="train")


# -- splits -----------------------------------------------------------------------------------------
def test_ratio_split_is_a_seeded_permutation(tmp_path) -> None:
    split = {"kind": "ratio", "ratios": [0.5, 0.25, 0.25], "seed": 7}
    a, b = load(tmp_path, split=split), load(tmp_path, split=split)
    other = load(tmp_path, split={**split, "seed": 8})
    perm = np.random.default_rng(7).permutation(N)
    expected = {"train": perm[:20], "val": perm[20:30], "test": perm[30:]}
    for s in ("train", "val", "test"):
        assert a.splits[s]["rid"].tolist() == expected[s].tolist()
        pd.testing.assert_frame_equal(a.splits[s], b.splits[s])
        assert a.splits[s].index.tolist() == expected[s].tolist()  # the file's row numbers
    assert other.splits["train"]["rid"].tolist() != a.splits["train"]["rid"].tolist()
    assert "ratio" in a.sources["val"] and "i.csv" in a.sources["val"]


def test_default_ratio_sizes(tmp_path) -> None:
    ds = load(tmp_path)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    assert sorted(pd.concat(ds.splits.values())["rid"]) == list(range(N))


def test_column_split_keeps_file_order_and_excludes_the_column(tmp_path) -> None:
    data = interactions()
    data["part"] = data["part"].map({"train": "tr", "val": "dev", "test": "te"})
    data.loc[data.index[:2], "part"] = "va"
    write(data, tmp_path / "i.csv")
    ds = load(tmp_path, split={"kind": "column", "column": "part", "values": {"train": "tr", "val": ["dev", "va"], "test": "te"}})
    for s, values in {"train": ["tr"], "val": ["dev", "va"], "test": ["te"]}.items():
        assert ds.splits[s]["rid"].tolist() == data.loc[data["part"].isin(values), "rid"].tolist()
    assert "part" in ds.schema.excluded
    leak = error_of(SchemaError, load, tmp_path, features={"categorical": ["part"]},
                    split={"kind": "column", "column": "part", "values": {"train": "tr", "val": ["dev", "va"], "test": "te"}})
    assert "leakage guard" in leak and "'part'" in leak and "i.csv" in leak


def test_column_split_accepts_numeric_codes(tmp_path) -> None:
    data = interactions()
    data["fold"] = np.arange(N) % 3
    write(data, tmp_path / "i.csv")
    ds = load(tmp_path, split={"kind": "column", "column": "fold", "values": {"train": 0, "val": 1, "test": 2}})
    assert ds.splits["val"]["rid"].tolist() == [r for r in range(N) if r % 3 == 1]


def test_time_split_with_cut_points(tmp_path) -> None:
    data = interactions()
    ds = load(tmp_path, split={"kind": "time", "column": "ts", "val_from": "2021-01-31", "test_from": "2021-02-05"})
    by_time = data.sort_values("ts", kind="stable")
    expected = {
        "train": by_time[by_time["ts"] < "2021-01-31"], "val": by_time[(by_time["ts"] >= "2021-01-31") & (by_time["ts"] < "2021-02-05")],
        "test": by_time[by_time["ts"] >= "2021-02-05"],
    }  # fmt: skip
    for s in ("train", "val", "test"):
        assert ds.splits[s]["rid"].tolist() == expected[s]["rid"].tolist()
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [30, 5, 5]
    assert "ts" not in [f.name for f in ds.schema.features]


def test_time_split_by_fractions_and_numeric_times(tmp_path) -> None:
    data = interactions()
    data["t"] = N - data["rid"]  # the last file rows are the oldest
    data.loc[0, "t"] = data.loc[1, "t"]  # a tie: the stable sort keeps file order
    write(data, tmp_path / "i.csv")
    ds = load(tmp_path, split={"kind": "time", "column": "t", "ratios": [0.5, 0.25, 0.25]})
    order = sorted(range(N), key=lambda r: (data.loc[r, "t"], r))
    assert ds.splits["train"]["rid"].tolist() == order[:20]
    assert ds.splits["val"]["rid"].tolist() == order[20:30] and ds.splits["test"]["rid"].tolist() == order[30:]
    cut = load(tmp_path, split={"kind": "time", "column": "t", "val_from": 31, "test_from": 36})
    assert cut.splits["test"]["t"].min() >= 36 and cut.splits["train"]["t"].max() < 31


def test_files_split_keeps_each_file(tmp_path) -> None:
    parts = {s: interactions(n, seed) for s, n, seed in (("train", 20, 1), ("val", 8, 2), ("test", 8, 3))}
    for s, frame in parts.items():
        write(frame, tmp_path / f"{s}.csv")
    ds = load(tmp_path, files={s: f"{s}.csv" for s in parts})
    for s, frame in parts.items():
        assert ds.splits[s]["item_id"].tolist() == frame["item_id"].tolist()
        assert ds.sources[s] == str(tmp_path / f"{s}.csv")


# -- the schema -------------------------------------------------------------------------------------
def test_feature_options_and_task_entries_reach_the_schema(tmp_path) -> None:
    features = {**FEATURES, "multi_hot": [{"name": "genres", "separator": "|", "min_count": 2, "max_vocab": 10, "max_tokens": 3}],
                "text": [{"name": "title", "min_count": 1, "max_vocab": 50, "max_tokens": 4, "lowercase": False}]}  # fmt: skip
    ds = load(tmp_path, features=features, exclude=["rid"])
    specs = {f.name: f for f in ds.schema.features}
    assert specs["genres"].kind == "multi_hot"
    assert specs["genres"].options == {"separator": "|", "min_count": 2, "max_vocab": 10, "max_tokens": 3}
    assert specs["title"].options == {"min_count": 1, "max_vocab": 50, "max_tokens": 4, "lowercase": False}
    assert specs["price"].options == {"log1p": True} and specs["item_id"].options == {}
    rating, tags, cvr, like = (ds.schema.task(t) for t in ("rating", "tags", "cvr", "like"))
    assert (rating.kind, rating.classes, rating.num_classes) == ("multiclass", ("1", "2", "3", "4", "5"), 5)
    assert (tags.kind, tags.separator, tags.classes) == ("multilabel", "|", None)
    assert (cvr.label, cvr.mask, cvr.source) == ("buy", "click", None)
    assert (like.source, ds.schema.main_task) == ("rating", "like")
    assert "rid" in ds.schema.excluded and "rating" in ds.schema.excluded


def test_label_or_derived_source_as_a_feature_is_refused(tmp_path) -> None:
    label = error_of(SchemaError, load, tmp_path, features={"categorical": ["item_id", "buy"]})
    assert "leakage guard" in label and "'buy'" in label and "label of task 'cvr'" in label and "i.csv" in label
    source = error_of(SchemaError, load, tmp_path, tasks=TASKS[:1], features={"numeric": ["rating"]})
    assert "leakage guard" in source and "'rating'" in source and "derived" in source


# -- bad input --------------------------------------------------------------------------------------
def test_missing_main_file(tmp_path) -> None:
    message = error_of(FileNotFoundError, load_tabular, "nope.csv", FEATURES, TASKS, "like", root=str(tmp_path))
    assert "data.files" in message and "nope.csv" in message and str(tmp_path) in message
    assert "data.root" in message and "download" in message


def test_missing_join_file(tmp_path) -> None:
    message = error_of(FileNotFoundError, load, tmp_path, joins=[{"path": "users.csv", "key": "user_id"}])
    assert "data.joins[0].path" in message and "users.csv" in message and "data.root" in message


def test_missing_file_is_downloaded_when_a_checksum_is_given(tmp_path) -> None:
    source = write(interactions(), tmp_path / "remote.csv")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    ds = load(tmp_path, files="sub/i2.csv", write_missing=False, download={"url": source.as_uri(), "sha256": digest})
    assert (tmp_path / "sub" / "i2.csv").is_file() and sum(len(f) for f in ds.splits.values()) == N
    message = error_of(SchemaError, load, tmp_path, files="sub/i3.csv", write_missing=False, download={"url": source.as_uri()})
    assert "sha256" in message and "i3.csv" in message


@pytest.mark.parametrize(
    "override, option, wrong, close, where",
    [
        ({"features": {"numeric": ["prise"]}}, "data.features.numeric", "prise", "price", "i.csv"),
        ({"features": {"categorical": ["Color"]}}, "data.features.categorical", "Color", "color", "i.csv"),
        ({"tasks": [{"name": "like", "kind": "binary", "label": "likes"}]}, "data.tasks[0].label", "likes", "like", "i.csv"),
        ({"tasks": [{"name": "cvr", "kind": "binary", "label": "buy", "mask": "clicks"}], "main_task": "cvr"},
         "data.tasks[0].mask", "clicks", "click", "i.csv"),
        ({"derived": {"like": {"from": "ratings", "op": ">=", "value": 4}}}, "data.derived.like.from", "ratings", "rating", "i.csv"),
        ({"joins": [{"path": "u.csv", "key": "user"}]}, "data.joins[0].key", "user", "user_id", "u.csv"),
        ({"joins": [{"path": "u.csv", "key": {"left": "user", "right": "user_id"}}]}, "data.joins[0].key", "user", "user_id",
         "i.csv"),
        ({"exclude": ["titel"]}, "data.exclude", "titel", "title", "i.csv"),
        ({"split": {"kind": "time", "column": "tss"}}, "data.split.column", "tss", "ts", "i.csv"),
    ],
)
def test_unknown_column_names_the_list_the_file_and_the_closest_name(tmp_path, override, option, wrong, close, where) -> None:
    message = error_of(SchemaError, load, tmp_path, **override)
    assert option in message and f"'{wrong}'" in message and f"is not in {tmp_path / where}" in message
    assert f"did you mean '{close}'" in message and "columns: " in message


def test_unknown_side_table_column(tmp_path) -> None:
    message = error_of(SchemaError, load, tmp_path, joins=[{"path": "u.csv", "key": "user_id", "columns": ["agee"]}])
    assert "data.joins[0].columns" in message and "u.csv" in message and "did you mean 'age'" in message


def test_side_table_missing_keys(tmp_path) -> None:
    write(USERS[USERS["user_id"] != 3], tmp_path / "u.csv")
    data = interactions()
    first = int(np.flatnonzero(data["user_id"] == 3)[0])
    message = error_of(SchemaError, load, tmp_path)
    rows = int((data["user_id"] == 3).sum())
    assert f"1 key value(s) of column 'user_id'" in message and f"({rows} rows)" in message
    assert "u.csv" in message and "i.csv" in message and f"first 3 at row {first}" in message
    assert "data.joins[0].key" in message


def test_side_table_duplicate_keys_and_colliding_columns(tmp_path) -> None:
    write(pd.concat([USERS, USERS.iloc[[1]]]), tmp_path / "u.csv")
    message = error_of(SchemaError, load, tmp_path)
    assert "u.csv" in message and "'user_id'" in message and "first: 3" in message and "duplicate" in message
    write(USERS.assign(color="x"), tmp_path / "u.csv")
    message = error_of(SchemaError, load, tmp_path)
    assert "['color']" in message and "u.csv" in message and "i.csv" in message and "data.joins[0].columns" in message


@pytest.mark.parametrize("sep, name, hint", [("\t", "tab", '"\\t"'), (";", "semicolon", '";"'), ("|", "pipe", '"|"')])
def test_wrong_delimiter_says_which_one_the_file_uses(tmp_path, sep, name, hint) -> None:
    write(interactions().drop(columns=["genres", "tags"]), tmp_path / "i.csv", sep=sep)
    message = error_of(SchemaError, load, tmp_path)
    assert "i.csv" in message and f"looks {name}-separated" in message and f"data.reader.delimiter: {hint}" in message


def test_wrong_delimiter_in_a_side_table_and_a_headerless_file(tmp_path) -> None:
    write(USERS, tmp_path / "u.csv", sep="\t")
    message = error_of(SchemaError, load, tmp_path)
    assert "u.csv" in message and "data.joins[0].reader.delimiter" in message and "tab" in message
    (tmp_path / "h.csv").write_text("a;1\nb;0\n")
    message = error_of(SchemaError, load_tabular, "h.csv", {"categorical": ["x"]}, [{"name": "y", "kind": "binary"}], "y",
                       root=str(tmp_path), reader={"header": False, "names": ["x", "y"]})  # fmt: skip
    assert "h.csv" in message and "semicolon" in message


@pytest.mark.parametrize(
    "split, empty, rule",
    [
        ({"ratios": [0.9, 0.0, 0.1]}, "val", "ratio split"),
        ({"kind": "column", "column": "part", "values": {"train": "train", "val": "val", "test": ["test", "never"]}},
         "test", "rows where part in ['test', 'never']"),  # the data's test rows renamed below
        ({"kind": "time", "column": "ts", "val_from": "2021-01-20", "test_from": "2030-01-01"}, "test", "rows where ts >= 2030-01-01"),
    ],
)
def test_empty_split_names_the_split_and_the_rule(tmp_path, split, empty, rule) -> None:
    data = interactions()
    data["part"] = data["part"].replace({"test": "val"})
    write(data, tmp_path / "i.csv")
    message = error_of(SchemaError, load, tmp_path, split=split)
    assert f"the {empty} split is empty" in message and rule in message and "i.csv" in message


def test_empty_split_file(tmp_path) -> None:
    for s, n in (("train", 20), ("val", 8)):
        write(interactions(n), tmp_path / f"{s}.csv")
    write(interactions(0), tmp_path / "test.csv")
    message = error_of(SchemaError, load, tmp_path, files={s: f"{s}.csv" for s in ("train", "val", "test")})
    assert "the test split is empty" in message and "test.csv" in message


@pytest.mark.parametrize(
    "override, where, key",
    [
        ({"reader": {"delimeter": ","}}, "data.reader", "delimeter"),
        ({"split": {"kind": "ratio", "ratio": [0.8, 0.1, 0.1]}}, "data.split", "ratio"),
        ({"features": {"numeric": [{"name": "price", "log": True}]}}, "data.features.numeric[0]", "log"),
        ({"tasks": [{"name": "like", "kind": "binary", "lable": "like"}]}, "data.tasks[0]", "lable"),
        ({"joins": [{"path": "u.csv", "key": "user_id", "how": "inner"}]}, "data.joins[0]", "how"),
        ({"derived": {"like": {"from": "rating", "op": ">=", "val": 4}}}, "data.derived.like", "val"),
    ],
)
def test_unknown_yaml_keys_list_the_valid_ones(tmp_path, override, where, key) -> None:
    message = error_of(SchemaError, load, tmp_path, **override)
    assert message.startswith(where) and f"'{key}'" in message and ("valid keys" in message or "options are" in message)


def test_missing_required_keys_of_an_entry(tmp_path) -> None:
    message = error_of(SchemaError, load, tmp_path, tasks=[{"name": "like", "label": "like"}])
    assert message.startswith("data.tasks[0]") and "['kind']" in message
    message = error_of(SchemaError, load, tmp_path, joins=[{"path": "u.csv"}])
    assert message.startswith("data.joins[0]") and "['key']" in message
    message = error_of(SchemaError, load, tmp_path, derived={"like": {"from": "rating", "value": 4}})
    assert message.startswith("data.derived.like") and "['op']" in message


def test_bad_split_options(tmp_path) -> None:
    assert "sum to 1" in error_of(SchemaError, load, tmp_path, split={"ratios": [0.8, 0.1, 0.2]})
    assert "data.split.kind" in error_of(SchemaError, load, tmp_path, split={"kind": "random"})
    assert "data.split.column" in error_of(SchemaError, load, tmp_path, split={"kind": "time"})
    assert "val_from" in error_of(SchemaError, load, tmp_path, split={"kind": "time", "column": "ts", "val_from": "2021-01-02"})
    data = interactions()
    message = error_of(SchemaError, load, tmp_path, split={"kind": "column", "column": "user_id"})
    assert "'user_id'" in message and f"first {data['user_id'][0]} at row 0" in message and "data.split.values" in message
    message = error_of(SchemaError, load, tmp_path, derived={"like": {"from": "part", "op": ">", "value": 1}})
    assert "data.derived.like" in message and "'part'" in message and "numeric" in message and "i.csv" in message


def test_dropna_drops_rows_before_the_split_and_rows_keep_their_file_numbers(tmp_path) -> None:
    data = interactions()
    gaps = [2, 9, 17]
    data.loc[gaps, "color"] = np.nan
    write(data, tmp_path / "i.csv")
    ds = load(tmp_path, dropna=["color"], split={"ratios": [0.5, 0.25, 0.25]})
    kept = sorted(pd.concat(ds.splits.values())["rid"])
    assert kept == [r for r in range(N) if r not in gaps] and len(ds.splits["train"]) == 18
    data.loc[20, "ts"] = "not a date"
    write(data, tmp_path / "i.csv")
    message = error_of(SchemaError, load, tmp_path, dropna=["color"], split={"kind": "time", "column": "ts"})
    assert "row 20" in message
    assert "did you mean 'color'" in error_of(SchemaError, load, tmp_path, dropna=["colour"])


def test_unparseable_time_names_the_row(tmp_path) -> None:
    data = interactions()
    data.loc[5, "ts"] = "not a date"
    write(data, tmp_path / "i.csv")
    message = error_of(SchemaError, load, tmp_path, split={"kind": "time", "column": "ts"})
    assert "'ts'" in message and "row 5" in message and "i.csv" in message


def test_unset_required_field_of_the_template(tmp_path) -> None:
    message = error_of(SchemaError, load, tmp_path, features="???")
    assert "data.features is required" in message


# -- the Hydra template -----------------------------------------------------------------------------
def test_template_leaves_the_dataset_fields_required() -> None:
    cfg = OmegaConf.load(CONF / "data" / "tabular.yaml")
    assert [k for k in ("files", "features", "tasks", "main_task") if OmegaConf.is_missing(cfg, k)] == [
        "files", "features", "tasks", "main_task"]
    assert cfg._target_ == "mtlrec.data.tabular.load_tabular" and cfg.loader.batch_size == 1024


def test_template_composes_and_instantiates(tmp_path) -> None:
    write(interactions(), tmp_path / "i.csv")
    write(USERS, tmp_path / "u.csv")
    overrides = [
        "data=tabular",
        f"data.root={tmp_path}",
        "data.files=i.csv",
        "data.features={categorical:[item_id,country],numeric:[age,{name:price,log1p:true}],multi_hot:[{name:genres,separator:'|'}]}",
        "data.tasks=[{name:like,kind:binary,label:like},{name:cvr,kind:binary,label:buy,mask:click}]",
        "data.main_task=like",
        "data.derived={like:{from:rating,op:'>=',value:4}}",
        "data.joins=[{path:u.csv,key:user_id}]",
        "data.split.kind=time",
        "data.split.column=ts",
    ]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("loader")
    assert data_cfg.pop("out_of_core") == {"enabled": False, "cache_dir": None, "chunk_rows": 262_144}
    ds = instantiate(data_cfg, _convert_="all")
    assert isinstance(ds, RawDataset) and ds.name == "my_data"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    assert ds.schema.task("like").source == "rating" and {"age", "country"} <= set(ds.splits["val"].columns)
    assert [f.options for f in ds.schema.features if f.name == "genres"] == [{"separator": "|"}]
    Preprocessor(ds.schema).fit(ds.splits["train"]).transform(ds.splits["test"], split="test")


def test_strip_types_drops_recbole_style_header_types_before_rename(tmp_path) -> None:
    frame = interactions().rename(columns={"item_id": "item_id:token", "price": "price:float", "rid": "rid:token"})
    write(frame, tmp_path / "typed.tsv")
    ds = load(tmp_path, files="typed.tsv", reader={"strip_types": True, "rename": {"rid": "row"}})
    assert {"item_id", "price", "row"} <= set(ds.splits["train"].columns)
    assert not [c for c in ds.splits["train"].columns if ":" in str(c)]
    clash = interactions().rename(columns={"item_id": "color:token"})
    write(clash, tmp_path / "clash.tsv")
    message = error_of(SchemaError, load, tmp_path, files="clash.tsv", reader={"strip_types": True})
    assert "clash.tsv" in message and "'color'" in message and "appear twice" in message


def test_time_split_by_shares_never_cuts_inside_one_timestamp(tmp_path) -> None:
    frame = interactions()
    frame["day"] = np.repeat(np.arange(10), 4)  # 10 moments of 4 rows...
    frame.loc[frame.index[30:34], "day"] = 7  # ...but day 7 spans sorted rows 28-33, across the 0.8 cut at row 32
    write(frame.sample(frac=1.0, random_state=0), tmp_path / "days.csv")
    ds = load(tmp_path, files="days.csv", split={"kind": "time", "column": "day", "ratios": [0.8, 0.1, 0.1]})
    days = {s: set(ds.splits[s]["day"]) for s in ("train", "val", "test")}
    assert not (days["train"] & days["val"]) and not (days["val"] & days["test"]) and not (days["train"] & days["test"])
    assert max(days["train"]) < min(days["val"]) <= max(days["val"]) < min(days["test"])
    assert (len(ds.splits["train"]), days["val"], days["test"]) == (34, {8}, {9})  # the cut moved past day 7


@pytest.mark.parametrize("name", ["ids.csv", "ids.parquet"])
def test_text_columns_and_na_values_read_the_same_from_csv_and_parquet(tmp_path, name) -> None:
    frame = interactions()
    frame["zip"] = ["00123", "NA", "10001", None] * (N // 4)
    if name.endswith(".csv"):  # what a CSV export holds: no quoting, an empty cell for the missing one
        frame.to_csv(tmp_path / name, index=False)
    else:
        frame.to_parquet(tmp_path / name, index=False)
    plain = load(tmp_path, files=name, split={"kind": "ratio", "seed": 1})
    declared = load(tmp_path, files=name, split={"kind": "ratio", "seed": 1},
                    reader={"text_columns": ["zip"], "na_values": [""]})
    zips = pd.concat([declared.splits[s]["zip"] for s in ("train", "val", "test")]).sort_index()
    assert zips.tolist()[:3] == ["00123", "NA", "10001"] and pd.isna(zips.tolist()[3])  # leading zeros, a literal NA
    if name.endswith(".csv"):  # pandas' CSV defaults: a number, and NA as missing
        plain_zips = pd.concat([plain.splits[s]["zip"] for s in ("train", "val", "test")]).sort_index()
        assert plain_zips.tolist()[0] == 123 and pd.isna(plain_zips.tolist()[1])
    message = error_of(SchemaError, load, tmp_path, files=name, reader={"text_columns": ["zipp"]})
    assert "data.reader.text_columns" in message and "did you mean 'zip'" in message
