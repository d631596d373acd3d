"""The input encoder: a batch's features -> one vector per row, built once and injected into the
architecture (as torchvision's ``VGG(features=...)`` is given its feature extractor).

Architectures only see :attr:`InputEncoder.output_dim`; they never see vocabulary sizes or feature
kinds. Each feature kind has one layer class in :data:`LAYERS` (keyed like the column transformers
of :mod:`mtlrec.data.columns`), built from what its fitted transformer reports.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtlrec.data.preprocess import Preprocessor
from mtlrec.models.inputs.categorical import CategoricalEmbedding
from mtlrec.models.inputs.image import ImageInput
from mtlrec.models.inputs.numeric import NumericInput
from mtlrec.models.inputs.token_bag import TokenBag

LAYERS: dict[str, type[nn.Module]] = {
    "categorical": CategoricalEmbedding,
    "numeric": NumericInput,
    "multi_hot": TokenBag,
    "text": TokenBag,
    "image": ImageInput,
}


def _module_name(key: str) -> str:
    """A submodule name for a batch key: no dot (nn.Module names cannot hold one), and not an
    attribute of ``nn.ModuleDict`` (a basket column named ``items`` or ``values`` would clash)."""
    name = key.replace(".", "_") or "_"
    return f"{name}_" if hasattr(nn.ModuleDict, name) else name


class InputEncoder(nn.Module):
    """One layer per batch key, outputs concatenated in a fixed order: ``[B, output_dim]``."""

    def __init__(self, layers: Mapping[str, nn.Module]):
        super().__init__()
        if not layers:
            raise ValueError("the schema has no features")
        self.keys = list(layers)
        names = [_module_name(k) for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names {self.keys} collide once dots are replaced; rename one")
        self.layers = nn.ModuleDict(dict(zip(names, layers.values())))
        self.output_dim = sum(layer.output_dim for layer in layers.values())
        if self.output_dim == 0:
            raise ValueError("the schema has no features")

    def forward(self, batch) -> Tensor:
        parts = [layer(batch.features[key]) for key, layer in zip(self.keys, self.layers.values())]
        return in_autocast_dtype(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The image backbone's parameters among the encoder's (the ``backbone`` part)."""
        return [p for layer in self.layers.values() if hasattr(layer, "backbone_parameters")
                for p in layer.backbone_parameters()]

    def reset_parameters(self) -> None:
        for layer in self.layers.values():
            layer.reset_parameters()

    def fresh_copy(self) -> "InputEncoder":
        """The same structure with newly drawn weights (independent per-task networks). What a
        layer lists in ``shared_objects()`` (an image catalog, cached features) is kept, not copied."""
        keep = [obj for layer in self.layers.values() for obj in getattr(layer, "shared_objects", list)()]
        twin = copy.deepcopy(self, memo={id(obj): obj for obj in keep})
        twin.reset_parameters()
        return twin

    def batch_transforms(self, training: bool = False) -> dict[str, Callable]:
        """Batch key -> what the DataLoader's workers must do to that feature first (an image
        layer that trains its backbone needs pixels; augmented ones for ``training`` batches);
        empty for most encoders."""
        transforms = {}
        for key, layer in zip(self.keys, self.layers.values()):
            transform = getattr(layer, "batch_transform", lambda training=False: None)(training=training)
            if transform is not None:
                transforms[key] = transform
        return transforms


def build_encoder(
    preprocessor: Preprocessor,
    embedding_dim: int = 8,
    kinds: Mapping[str, Mapping[str, Any]] | None = None,
    backbone: nn.Module | None = None,
) -> InputEncoder:
    """The encoder for a fitted preprocessing.

    Args:
        embedding_dim: width of every embedding (categorical fields, token bags).
        kinds: per-kind layer options, e.g. ``{text: {embedding_dim: 32, mode: sum}}``
            (``embedding_dim`` overrides the shared width for that kind).
        backbone: the image backbone (config group ``backbone``), shared by every image feature.
    """
    kinds = {k: dict(v or {}) for k, v in (kinds or {}).items()}
    unknown = sorted(set(kinds) - set(LAYERS))
    if unknown:
        raise ValueError(f"encoder.kinds: unknown feature kind(s) {unknown}; kinds are {sorted(LAYERS)}")
    layers: dict[str, nn.Module] = {}
    backbone_used = False
    for key, transformer in preprocessor.transformers.items():
        layer = LAYERS[transformer.kind]
        accepts = inspect.signature(layer).parameters
        options = {"embedding_dim": embedding_dim} if "embedding_dim" in accepts else {}
        if "backbone" in accepts:
            if backbone is None:
                raise ValueError(f"feature {key!r} is an image: choose an image backbone, e.g. backbone=vgg16")
            options["backbone"], backbone_used = backbone, True
        options.update(kinds.get(transformer.kind, {}))
        try:
            layers[key] = layer(**transformer.encoder_args(), **options)
        except TypeError as err:
            raise ValueError(f"encoder.kinds.{transformer.kind}: {err}") from None
    if backbone is not None and not backbone_used:
        raise ValueError("backbone: the dataset has no image feature, so the backbone would be unused; "
                         "drop the backbone option (backbone=none) or declare an image feature")
    return InputEncoder(layers)


def in_autocast_dtype(x: Tensor) -> Tensor:
    """Under autocast, the encoded input converted to autocast's dtype once, here.

    Every first layer reads this input through a matmul, which autocast would convert it for, once
    per reader, converting each reader's gradient back too. CGC's and PLE's first level has four
    readers (task experts, shared experts, task gates, shared gate): converting once took CGC's
    bf16 step on the Census input (batch 4096) from 18.7–19.9 to 16.7–17.1 ms, PLE's by 2–8 %,
    MMoE's (two readers) by 2 % (medians of 40, interleaved, two runs). The values each matmul
    sees are the same; the readers' gradients then add up in autocast's dtype, as they do for any
    tensor autocast made. Without autocast (evaluation, float32 training) the input is returned as it is."""
    device = x.device.type
    if x.is_floating_point() and torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x
