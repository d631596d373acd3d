"""``data=grocery`` reads the Grocery Store repository's own layout: three splits, three tasks
(fine / coarse / top category from the folder), the image column as the only input, and one clear
line for a missing checkout or an inconsistent list. Runs on the committed fixture, and on the
full data when it is present."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtlrec.data.download import DatasetNotFoundError
from mtlrec.data.grocery import load_grocery
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import SchemaError

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "grocery"
REAL = REPO.parent / "shared" / "data" / "grocery-store"


def test_the_fixture_loads_with_the_three_tasks() -> None:
    raw = load_grocery(FIXTURE)
    assert {s: len(f) for s, f in raw.splits.items()} == {"train": 24, "val": 12, "test": 12}
    schema = raw.schema
    assert [(t.name, t.num_classes) for t in schema.tasks] == [("fine", 81), ("coarse", 43), ("category", 3)]
    assert [(f.name, f.kind) for f in schema.features] == [("image", "image")] and schema.main_task == "fine"
    train = raw.splits["train"]
    assert set(train["category"]) == {"Fruit", "Packages", "Vegetables"}
    assert train.loc[train["fine_id"] == 0, "category"].eq("Fruit").all()  # Golden-Delicious


def test_the_image_column_becomes_catalog_ids_of_existing_files() -> None:
    raw = load_grocery(FIXTURE)
    pre = Preprocessor(raw.schema)
    pre.fit(raw.splits["train"], split="train")
    ids = {s: pre.transform(raw.splits[s], split=s).features["image"] for s in ("train", "val", "test")}
    column = pre.transformers["image"]
    assert ids["train"].tolist() == list(range(24)) and ids["test"].max().item() == 47
    assert len(column.paths) == 48 and all(Path(p).is_file() for p in column.paths)


@pytest.mark.skipif(not REAL.is_dir(), reason="the Grocery Store data is not in ../shared/data")
def test_the_full_data_has_the_published_sizes() -> None:
    raw = load_grocery(REAL)
    assert {s: len(f) for s, f in raw.splits.items()} == {"train": 2640, "val": 296, "test": 2485}
    assert raw.splits["train"]["fine_id"].nunique() == 81 and raw.splits["train"]["coarse_id"].nunique() == 43
    assert raw.splits["val"]["fine_id"].nunique() == 60  # as the docs warn
    counts = raw.splits["test"]["category"].value_counts().to_dict()
    assert counts == {"Fruit": 1117, "Vegetables": 587, "Packages": 781}


def test_a_missing_checkout_says_where_to_get_it(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="clone https://github.com/marcusklasson/GroceryStoreDataset"):
        load_grocery(tmp_path)


def test_an_inconsistent_coarse_class_names_the_line(tmp_path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "g")
    lines = (tmp_path / "g" / "dataset" / "val.txt").read_text().splitlines()
    path, fine, _ = lines[2].split(", ")
    lines[2] = f"{path}, {fine}, 0"
    (tmp_path / "g" / "dataset" / "val.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"val.txt: line 3 has coarse class 0, but classes.csv puts"):
        load_grocery(tmp_path / "g")


def test_a_missing_image_names_the_feature_row_and_path(tmp_path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "g")
    first = (tmp_path / "g" / "dataset" / "test.txt").read_text().splitlines()[0].split(",")[0]
    (tmp_path / "g" / "dataset" / first).unlink()
    raw = load_grocery(tmp_path / "g")
    pre = Preprocessor(raw.schema)
    pre.fit(raw.splits["train"], split="train")
    with pytest.raises(SchemaError, match=r"^test: image feature 'image' at row 0 .* is not a file"):
        pre.transform(raw.splits["test"], split="test")


def test_item_ids_read_as_floats_still_name_their_files(tmp_path) -> None:
    """An id column with gaps comes out of pandas as float (12.0): the template must see 12."""
    import pandas as pd

    from mtlrec.data.columns.image import ImageColumn
    from mtlrec.data.schema import FeatureSpec

    (tmp_path / "12.jpg").write_bytes(next((FIXTURE / "dataset" / "train").rglob("*.jpg")).read_bytes())
    column = ImageColumn([FeatureSpec("item", "image", {"root": str(tmp_path), "template": "{}.jpg"})])
    column.fit(pd.DataFrame({"item": [12.0]}), "train")
    assert column.transform(pd.DataFrame({"item": [12.0, 12.0]}), "train").tolist() == [0, 0]
