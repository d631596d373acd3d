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

For transfer between domains of the catalogue (:mod:`experiments/grocery_transfer`),
``categories`` keeps the photos of some top-level categories only (e.g. a source of Fruit and
Vegetables, a target of Packages): class ids are renumbered over the kept classes, and the
``category`` task is dropped when one category is left (it would be constant). ``shots`` keeps k
training photos per fine class, drawn with ``shots_seed`` (a data seed: every run seed sees the
same k photos), for few-shot targets; validation and test stay whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.download import DatasetNotFoundError
from mtlrec.data.raw import SPLITS, RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec

__all__ = ["CATEGORIES", "TASKS", "load_grocery"]

CATEGORIES = ("Fruit", "Packages", "Vegetables")
TASKS = ("fine", "coarse", "category")
SOURCE = "https://github.com/marcusklasson/GroceryStoreDataset"


def load_grocery(root: str, main_task: str = "fine", categories: Sequence[str] | None = None,
                 shots: int | None = None, shots_seed: int = 0) -> RawDataset:
    """``root``: the repository's folder (the one holding ``dataset/``). ``categories``: the
    top-level categories kept (default all three); ``shots``: training photos kept per fine class
    (default all)."""
    if main_task not in TASKS:
        raise SchemaError(f"data.main_task: {main_task!r} is not a task of grocery; use one of {', '.join(TASKS)}")
    kept = list(categories) if categories else list(CATEGORIES)
    unknown = sorted(set(kept) - set(CATEGORIES))
    if unknown or len(set(kept)) != len(kept):
        raise SchemaError(f"data.categories: {kept} must name distinct categories among {', '.join(CATEGORIES)}")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise SchemaError(f"data.shots={shots!r}: give a whole number of training photos per class (>= 1), or null")
    folder = Path(root).expanduser() / "dataset"
    classes = _classes(folder)
    splits = {split: _split(folder, split, classes) for split in SPLITS}
    tasks = list(TASKS)
    if len(kept) < len(CATEGORIES):
        splits, classes = _keep_categories(splits, classes, kept)
        if len(kept) == 1:
            tasks.remove("category")
            if main_task == "category":
                raise SchemaError(f"data.main_task: category is constant with data.categories={kept}; choose fine "
                                  f"or coarse")
    if shots is not None:
        splits["train"] = _few_shots(splits["train"], shots, shots_seed)
    specs = {
        "fine": lambda: TaskSpec("fine", "multiclass", "fine_id", num_classes=len(classes)),
        "coarse": lambda: TaskSpec("coarse", "multiclass", "coarse_id",
                                   num_classes=int(classes["coarse_id"].max()) + 1),
        "category": lambda: TaskSpec("category", "multiclass", "category", classes=tuple(kept)),
    }
    schema = Schema(
        features=(FeatureSpec("image", "image", {"root": str(folder.absolute())}),),
        tasks=tuple(specs[t]() for t in tasks),
        main_task=main_task,
    )
    return RawDataset(schema, splits, name="grocery", sources={s: str(folder / f"{s}.txt") for s in SPLITS})


def _keep_categories(splits: dict[str, pd.DataFrame], classes: pd.DataFrame,
                     kept: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Rows of the kept categories; fine and coarse ids renumbered 0.. over their classes (in the
    order of the original ids), so each head has exactly the kept classes."""
    splits = {s: f[f["category"].isin(kept)].reset_index(drop=True) for s, f in splits.items()}
    fine_ids = sorted(set().union(*(set(f["fine_id"]) for f in splits.values())))
    classes = classes.loc[fine_ids]
    fine_map = {old: new for new, old in enumerate(fine_ids)}
    coarse_map = {old: new for new, old in enumerate(sorted(set(classes["coarse_id"])))}
    for frame in splits.values():
        frame["fine_id"] = frame["fine_id"].map(fine_map)
        frame["coarse_id"] = frame["coarse_id"].map(coarse_map)
    classes = classes.assign(coarse_id=classes["coarse_id"].map(coarse_map)).rename(index=fine_map)
    return splits, classes


def _few_shots(train: pd.DataFrame, shots: int, seed: int) -> pd.DataFrame:
    """Up to ``shots`` rows per fine class, a seeded draw (all of a class with fewer)."""
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.permutation(group.index.to_numpy())[:shots]) for _, group in train.groupby("fine_id")]
    return train.loc[np.sort(np.concatenate(keep))].reset_index(drop=True)


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
