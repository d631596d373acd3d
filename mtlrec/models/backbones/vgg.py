"""A torchvision VGG16 as an image backbone: structure, weights and preprocessing kept apart, as
in torchvision, plus the freezing policies of the classic transfer recipe.

* **Structure** comes from torchvision's builders (``vgg16``, ``vgg16_bn``); only the
  convolutional base (``features``) is kept, followed by global average pooling (a 512-vector
  whatever the input size) or the flattened last feature map (``pool="flatten"``).
* **Weights**: a torchvision weights name (``IMAGENET1K_V1``, through the weights API: downloaded
  once into the torch hub cache), a local state dict (``weights_path``: an offline copy of the
  ImageNet checkpoint, or a backbone trained by mtlrec), or none (random initialisation).
* **Preprocessing** is the weights object's own transform (resize, centre crop, normalisation),
  with a configurable input size; it is never written out a second time here. Without pretrained
  weights, the ImageNet weights' transform (``transform_from``) still gives the normalisation.
* **Freezing**: ``freeze="all"`` (the classic recipe: the convolutional base is a fixed feature
  extractor), ``"none"``, or an integer k: only the last k of VGG's five convolutional blocks
  train. Frozen blocks stay in eval mode even when Lightning calls ``train()`` every epoch, so a
  frozen BatchNorm's running statistics never move (``requires_grad=False`` alone would still
  update them). :meth:`VGGBackbone.split` cuts the network at the freezing boundary, so the frozen
  part's output can be cached (:mod:`mtlrec.models.inputs.image`).
* **Random weights** (no ``weights``, no ``weights_path``) are drawn from ``init_seed``, not from
  the run's seed: every run of a sweep then shares one fixed random extractor, and its cached
  features, as it would share pretrained ones.
* ``augment``: data augmentation of training images (a list of torchvision transforms v2, given
  in config with ``_target_``), applied before the weights' transform. It changes the pixels at
  every step, so it cannot go with a cached frozen part (:mod:`mtlrec.models.inputs.image` refuses
  the combination).
* ``lr``: the learning rate of the backbone's trained parameters (usually smaller than the
  model's: pretrained filters should move slowly); ``None`` keeps the model's.
"""

from __future__ import annotations

import sys
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models import WeightsEnum
from torchvision.transforms import v2

from mtlrec.data.messages import one_line

ARCHS: dict[str, tuple[Callable[..., models.VGG], type[WeightsEnum]]] = {
    "vgg16": (models.vgg16, models.VGG16_Weights),
    "vgg16_bn": (models.vgg16_bn, models.VGG16_BN_Weights),
}


class WeightsNotAvailableError(FileNotFoundError):
    """Pretrained weights could not be fetched (offline) or read; says how to supply a file."""


def conv_blocks(features: nn.Sequential) -> list[nn.Sequential]:
    """VGG's convolutional base cut into its blocks, each ending with its max-pool."""
    blocks, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    return blocks


class VGGBackbone(nn.Module):
    """Images ``[B, 3, H, W]`` (already transformed) -> ``[B, output_dim]``."""

    def __init__(
        self,
        arch: str = "vgg16",
        weights: str | None = None,
        weights_path: str | None = None,
        freeze: str | int = "all",
        input_size: int = 224,
        pool: str = "avg",
        transform_from: str = "IMAGENET1K_V1",
        init_seed: int = 0,
        lr: float | None = None,
        augment: Sequence[Callable[[Tensor], Tensor]] | None = None,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"backbone.arch: {arch!r} is not supported; use one of {', '.join(ARCHS)}")
        if weights and weights_path:
            raise ValueError("backbone.weights and backbone.weights_path: give one of them, not both")
        if pool not in ("avg", "flatten"):
            raise ValueError(f"backbone.pool must be avg or flatten, got {pool!r}")
        builder, weights_enum = ARCHS[arch]
        if lr is not None and not lr > 0:
            raise ValueError(f"backbone.lr must be > 0 (or null for the model's learning rate), got {lr}")
        chosen = _weights(weights_enum, weights, "backbone.weights") if weights else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            vgg = _build(builder, chosen, arch)
        if weights_path:
            load_features(vgg, weights_path)
        self.blocks = nn.ModuleList(conv_blocks(vgg.features))
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.Identity()
        last_channels = 512
        side = input_size // 2 ** len(self.blocks)
        if pool == "flatten" and side < 1:
            raise ValueError(f"backbone.input_size {input_size} is too small for {len(self.blocks)} max-pools")
        self.output_dim = last_channels if pool == "avg" else last_channels * side * side
        # the preprocessing of the weights in use (or of transform_from's, for random or local weights);
        # resize to the same 256/224 ratio as the weights' own recipe, then centre-crop to input_size
        source = chosen or _weights(weights_enum, transform_from, "backbone.transform_from")
        self.transform = source.transforms(crop_size=input_size, resize_size=round(input_size * 256 / 224))
        # training images only: the augmentations (torchvision transforms v2, on the decoded uint8
        # image), then the weights' own transform; validation and test see ``transform`` alone
        self.train_transform = v2.Compose([*augment, self.transform]) if augment else None
        self.frozen = self._freeze(freeze)
        self.lr = lr

    def _freeze(self, freeze: str | int) -> list[int]:
        """Indices of the frozen blocks; their parameters stop requiring gradients."""
        n = len(self.blocks)
        if freeze == "all":
            frozen = list(range(n))
        elif freeze == "none":
            frozen = []
        elif isinstance(freeze, int) and not isinstance(freeze, bool) and 0 <= freeze <= n:
            frozen = list(range(n - freeze))  # the last `freeze` blocks train
        else:
            raise ValueError(f"backbone.freeze must be all, none or the number of last blocks to train (0-{n}), "
                             f"got {freeze!r}")
        for i in frozen:
            for p in self.blocks[i].parameters():
                p.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> "VGGBackbone":
        super().train(mode)
        for i in self.frozen:  # frozen blocks never leave eval mode (BatchNorm statistics stay put)
            self.blocks[i].eval()
        return self

    @property
    def trainable(self) -> bool:
        return len(self.frozen) < len(self.blocks)

    def forward(self, images: Tensor) -> Tensor:
        x = images
        for block in self.blocks:
            x = block(x)
        return self.pool(x).flatten(1)

    def features_state_dict(self) -> dict[str, Tensor]:
        """The convolutional base in torchvision's layout (``features.<index>.<name>``), the file
        ``weights_path`` reads: a backbone trained by one run becomes the starting point of another,
        exactly as torchvision's ImageNet file would be."""
        state, offset = {}, 0
        for block in self.blocks:
            for index, layer in enumerate(block):
                for name, tensor in layer.state_dict().items():
                    state[f"features.{offset + index}.{name}"] = tensor.detach().clone()
            offset += len(block)
        return state

    def split(self) -> tuple[nn.Sequential | None, nn.Sequential | None]:
        """(frozen part, trained part), sharing this backbone's layers: ``trained(frozen(x)) ==
        self(x)``. The pooling goes with the trained part, or with the frozen one when all is frozen;
        either part is ``None`` when empty."""
        k = len(self.frozen)
        head = [self.pool, nn.Flatten(1)]
        if k == len(self.blocks):
            return nn.Sequential(*self.blocks, *head).eval(), None
        trained = nn.Sequential(*self.blocks[k:], *head)
        return (nn.Sequential(*self.blocks[:k]).eval() if k else None), trained


def _weights(enum: type[WeightsEnum], name: str, option: str) -> WeightsEnum:
    try:
        return enum[name]
    except KeyError:
        raise ValueError(f"{option}: {name!r} is not a weights name of {enum.__name__}; "
                         f"use one of {[w.name for w in enum]}") from None


def _build(builder, weights: WeightsEnum | None, arch: str) -> models.VGG:
    try:  # the download's progress bar only on a terminal: a log or an error report stays one line
        return builder(weights=weights, progress=sys.stderr.isatty())
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        url = weights.url if weights is not None else "?"
        raise WeightsNotAvailableError(
            f"backbone.weights={weights.name}: could not fetch {url} ({type(err).__name__}: {err}); on a machine "
            f"without internet, download that file elsewhere and pass backbone.weights_path=<file> (with "
            f"backbone.weights=null)"
        ) from None


def load_features(vgg: models.VGG, path: str | Path) -> None:
    """Load a state dict into the convolutional base exactly: a whole VGG checkpoint
    (``features.*`` and ``classifier.*``, e.g. torchvision's file) or the base alone."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotAvailableError(f"backbone.weights_path: no file at {path.absolute()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign file
        raise WeightsNotAvailableError(f"backbone.weights_path: {path} is not a readable state dict ({err})") from None
    state = state.get("state_dict", state)
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")} or state
    try:
        missing, unexpected = vgg.features.load_state_dict(features, strict=False)
        problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else ""
    except RuntimeError as err:  # shapes that do not match
        problem = one_line(err)[:200]
    if problem:
        raise WeightsNotAvailableError(
            f"backbone.weights_path: {path} does not fit this backbone ({problem}); is it for the other arch "
            f"(vgg16 vs vgg16_bn)?"
        )
