"""The input encoder: a batch's features -> one vector per row, built once and injected into the
architecture (as torchvision's ``VGG(features=...)`` is given its feature extractor).

Architectures only see :attr:`InputEncoder.output_dim`; they never see vocabulary sizes or feature
kinds. Each feature kind has one layer class in :data:`LAYERS` (keyed like the column transformers
of :mod:`mtlrec.data.columns`), built from what its fitted transformer reports.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtlrec.data.preprocess import Preprocessor
from mtlrec.models.inputs.categorical import CategoricalEmbedding
from mtlrec.models.inputs.numeric import NumericInput
from mtlrec.models.inputs.token_bag import TokenBag

LAYERS: dict[str, type[nn.Module]] = {
    "categorical": CategoricalEmbedding,
    "numeric": NumericInput,
    "multi_hot": TokenBag,
    "text": TokenBag,
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
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def reset_parameters(self) -> None:
        for layer in self.layers.values():
            layer.reset_parameters()

    def fresh_copy(self) -> "InputEncoder":
        """The same structure with newly drawn weights (independent per-task networks)."""
        twin = copy.deepcopy(self)
        twin.reset_parameters()
        return twin


def build_encoder(
    preprocessor: Preprocessor,
    embedding_dim: int = 8,
    kinds: Mapping[str, Mapping[str, Any]] | None = None,
) -> InputEncoder:
    """The encoder for a fitted preprocessing.

    Args:
        embedding_dim: width of every embedding (categorical fields, token bags).
        kinds: per-kind layer options, e.g. ``{text: {embedding_dim: 32, mode: sum}}``
            (``embedding_dim`` overrides the shared width for that kind).
    """
    kinds = {k: dict(v or {}) for k, v in (kinds or {}).items()}
    unknown = sorted(set(kinds) - set(LAYERS))
    if unknown:
        raise ValueError(f"encoder.kinds: unknown feature kind(s) {unknown}; kinds are {sorted(LAYERS)}")
    layers: dict[str, nn.Module] = {}
    for key, transformer in preprocessor.transformers.items():
        options = {"embedding_dim": embedding_dim, **kinds.get(transformer.kind, {})}
        try:
            layers[key] = LAYERS[transformer.kind](**transformer.encoder_args(), **options)
        except TypeError as err:
            raise ValueError(f"encoder.kinds.{transformer.kind}: {err}") from None
    return InputEncoder(layers)
