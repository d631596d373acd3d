"""Image features: a column of image paths, or of item ids turned into paths by a template.

The transform checks that every file exists (one line naming the feature, the split, the row and
the path otherwise) and maps each row to a *catalog id*: the position of its file in
:attr:`ImageColumn.paths`, the list of distinct files met so far (train first, then validation,
test, and any data scored later). Pixels are never put in a table: the encoder reads them, or its
cached features, by id (see :mod:`mtlrec.data.images`). Nothing is fit, so the state is empty.

Options:
    root: the folder relative paths are read from (default: the working directory).
    template: how a cell becomes a relative path, ``{}`` standing for the cell
        (``"{}"`` by default; ``"images/{}.jpg"`` maps item ids to files).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mtlrec.data.columns.base import ColumnTransformer
from mtlrec.data.messages import shown
from mtlrec.data.schema import SchemaError


class ImageColumn(ColumnTransformer):
    kind = "image"
    option_defaults = {"root": None, "template": "{}"}

    def __init__(self, specs):
        super().__init__(specs)
        self.paths: list[str] = []  # catalog id -> absolute path; shared with the encoder layer
        self._ids: dict[str, int] = {}

    @property
    def spec(self):
        return self.specs[0]

    def _path(self, cell: object) -> Path:
        value = cell.item() if isinstance(cell, np.generic) else cell
        if isinstance(value, float) and value.is_integer():  # an id column pandas read as float (gaps)
            value = int(value)
        path = Path(str(self.option(self.spec, "template")).format(value)).expanduser()
        root = self.option(self.spec, "root")
        return path if path.is_absolute() or root is None else Path(root).expanduser() / path

    def fit(self, frame: pd.DataFrame, split: str) -> None:
        self.fitted = True

    def transform(self, frame: pd.DataFrame, split: str) -> Tensor:
        ids = np.empty(len(frame), dtype=np.int64)
        for r, (row, cell) in enumerate(frame[self.spec.name].items()):
            if pd.isna(cell):
                raise SchemaError(f"{split}: image feature {self.spec.name!r} is empty at row {row}; every row needs "
                                  f"an image (drop those rows with the loader's dropna)")
            path = self._path(cell)
            key = str(path.absolute())
            if key not in self._ids:
                if not path.is_file():
                    raise SchemaError(
                        f"{split}: image feature {self.spec.name!r} at row {row} ({shown(cell)}) names {key}, which "
                        f"is not a file; check the column and the feature's root/template options"
                    )
                self._ids[key] = len(self.paths)
                self.paths.append(key)
            ids[r] = self._ids[key]
        return torch.from_numpy(ids)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fitted = True

    def encoder_args(self) -> dict[str, Any]:
        return {"paths": self.paths}
