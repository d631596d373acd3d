"""The Grocery Store dataset: smartphone photos of grocery products, labelled at three levels.

Klasson, Zhang, Kjellström, "A Hierarchical Grocery Store Image Dataset with Visual and Semantic
Labels", WACV 2019; https://github.com/marcusklasson/GroceryStoreDataset (MIT). The loader reads the
repository's own layout, so ``root`` can be a fresh clone (or the resized copy the tests use):

* ``dataset/{train,val,test}.txt``: one image per line, ``relative/path.jpg, fine_id, coarse_id``
  (2,640 / 296 / 2,485 images);
* ``dataset/classes.csv``: the 81 fine classes, with their coarse class (43 ids; the paper's text
  says 42) and iconic image;
* the top-level category (Fruit, Packages, Vegetables) is the first folder under the split.

Three tasks on one input, the product photo: ``fine`` (81 classes, the main task), ``coarse`` (43)
and ``category`` (3). The validation split covers only 60 of the 81 fine classes, so validation
accuracy says nothing about the other 21 (they are in train and test); selection on it is still
selection on validation, never on test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtlrec.data.download import DatasetNotFoundError
from mtlrec.data.raw import SPLITS, RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec

__all__ = ["CATEGORIES", "TASKS", "load_grocery"]

CATEGORIES = ("Fruit", "Packages", "Vegetables")
TASKS = ("fine", "coarse", "category")
SOURCE = "https://github.com/marcusklasson/GroceryStoreDataset"


def load_grocery(root: str, main_task: str = "fine") -> RawDataset:
    """``root``: the repository's folder (the one holding ``dataset/``)."""
    if main_task not in TASKS:
        raise SchemaError(f"data.main_task: {main_task!r} is not a task of grocery; use one of {', '.join(TASKS)}")
    folder = Path(root).expanduser() / "dataset"
    classes = _classes(folder)
    splits = {split: _split(folder, split, classes) for split in SPLITS}
    schema = Schema(
        features=(FeatureSpec("image", "image", {"root": str(folder.absolute())}),),
        tasks=(
            TaskSpec("fine", "multiclass", "fine_id", num_classes=len(classes)),
            TaskSpec("coarse", "multiclass", "coarse_id", num_classes=int(classes["coarse_id"].max()) + 1),
            TaskSpec("category", "multiclass", "category", classes=CATEGORIES),
        ),
        main_task=main_task,
    )
    return RawDataset(schema, splits, name="grocery", sources={s: str(folder / f"{s}.txt") for s in SPLITS})


def _classes(folder: Path) -> pd.DataFrame:
    path = folder / "classes.csv"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"data.root: no {path}; clone {SOURCE} (or download its zip) and set data.root to the folder holding "
            f"dataset/"
        )
    table = pd.read_csv(path)
    table.columns = ["fine_name", "fine_id", "coarse_name", "coarse_id", "iconic", "description"][: len(table.columns)]
    if sorted(table["fine_id"]) != list(range(len(table))):
        raise SchemaError(f"{path}: the class ids are not 0..{len(table) - 1}; is this the repository's file?")
    return table.set_index("fine_id")


def _split(folder: Path, split: str, classes: pd.DataFrame) -> pd.DataFrame:
    path = folder / f"{split}.txt"
    if not path.is_file():
        raise DatasetNotFoundError(f"data.root: no {path}; the {split} list of {SOURCE} belongs there")
    frame = pd.read_csv(path, header=None, names=["image", "fine_id", "coarse_id"], skipinitialspace=True)
    if frame.isna().any().any():
        row = int(frame.isna().any(axis=1).to_numpy().argmax())
        raise SchemaError(f"{path}: line {row + 1} is not 'path, fine_id, coarse_id'")
    bad = ~frame["fine_id"].isin(classes.index)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise SchemaError(f"{path}: line {row + 1} has fine class {frame['fine_id'].iloc[row]}, not in classes.csv")
    expected = classes.loc[frame["fine_id"], "coarse_id"].to_numpy()
    wrong = frame["coarse_id"].to_numpy() != expected
    if wrong.any():
        row = int(wrong.argmax())
        raise SchemaError(f"{path}: line {row + 1} has coarse class {frame['coarse_id'].iloc[row]}, but classes.csv "
                          f"puts its fine class in coarse class {expected[row]}")
    frame["category"] = frame["image"].str.split("/").str[1]
    unknown = ~frame["category"].isin(CATEGORIES)
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        raise SchemaError(f"{path}: line {row + 1}: {frame['image'].iloc[row]} is not under "
                          f"<split>/{{{','.join(CATEGORIES)}}}/")
    return frame
