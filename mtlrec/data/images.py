"""Image files as model input: decoding, the per-batch pixel tensor, and loading it in workers.

An image feature's column in a table holds *catalog ids* (one int64 per row, into the list of
distinct image files the column transformer met, :class:`mtlrec.data.columns.image.ImageColumn`).
Rows that show the same item share an id, so a batch needs each distinct image once:
:class:`ImageBatch` is the batch's distinct images as pixels plus, per row, which of them it shows.

When the backbone is trained end to end, pixels are needed at every step; :class:`PixelLoader`
reads and transforms them inside the DataLoader's worker processes (the collate step), so the
training step never waits on JPEG decoding. With a frozen backbone no pixels travel at all: the
encoder looks the ids up in its cached features.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from mtlrec.data.messages import one_line
from mtlrec.data.schema import SchemaError


def load_image(path: str | os.PathLike) -> Tensor:
    """``[3, H, W]`` uint8 (grey and RGBA images converted to RGB). A file that is not an image
    (truncated, or another format under an image's name) is named, with what to do about it."""
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise SchemaError(
            f"{path}: not a readable image ({one_line(err)}); replace the file, or remove it and the rows that "
            f"point at it"
        ) from None


@dataclass
class ImageBatch:
    """``pixels[index[i]]`` is row i's image: ``pixels`` ``[U, 3, H, W]`` (U distinct images),
    ``index`` ``[B]`` int64."""

    index: Tensor
    pixels: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ImageBatch":
        return ImageBatch(self.index.to(device, non_blocking=non_blocking),
                          self.pixels.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return int(self.index.shape[0])


class PixelLoader:
    """Catalog ids ``[B]`` -> :class:`ImageBatch`, decoding each distinct image once.

    Picklable (a list of paths and a torchvision transform), so it runs in DataLoader workers.
    """

    def __init__(self, paths: Sequence[str], transform: Callable[[Tensor], Tensor]):
        self.paths, self.transform = paths, transform

    def __call__(self, ids: Tensor) -> ImageBatch:
        distinct, index = torch.unique(ids, return_inverse=True)
        pixels = torch.stack([self.transform(load_image(self.paths[i])) for i in distinct.tolist()])
        return ImageBatch(index, pixels)


class BatchTransforms:
    """The DataLoader's collate step: replaces the named features of a batch (e.g. catalog ids by
    an :class:`ImageBatch`). With no transforms it hands the batch through untouched."""

    def __init__(self, transforms: Mapping[str, Callable] | None = None):
        self.transforms = dict(transforms or {})

    def __call__(self, batch):
        for key, transform in self.transforms.items():
            batch.features[key] = transform(batch.features[key])
        return batch
