"""The image feature's encoder layer: catalog ids -> the backbone's vector for each row's image.

What runs at training time depends on the freezing policy, so the CNN never does work whose result
is already known:

* **all frozen** (the classic transfer recipe): the backbone is a fixed function, so its output is
  computed once per distinct image, kept on disk by :class:`FeatureCache` (keyed by file content,
  weights and transform) and looked up by id: later epochs, and later runs of a sweep, never run
  the CNN. The frozen backbone is not part of the model's state (checkpoints stay small); it is
  rebuilt from the config.
* **last k blocks trained**: the frozen blocks' output (a feature map) is cached the same way, and
  only the trained blocks run, once per distinct image of the batch.
* **nothing frozen** (or ``cache=False``): pixels are read and transformed by DataLoader workers
  (:class:`~mtlrec.data.images.PixelLoader`, wired by :mod:`mtlrec.build`); the whole backbone
  runs once per distinct image of the batch.

The vector enters the architecture at the backbone's width: the architecture's own layers are the
new dense layers trained for the target domain. By default it is batch-normalised first
(``norm="batch"``): pooled CNN features sit far from unit scale (random-init VGG16 at 112 px:
mean 0.12, spread between images 0.02 per dimension), which would leave the first dense layer
learning the scale instead of the content. Its statistics come from training batches only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrec.data.images import ImageBatch, PixelLoader
from mtlrec.models.backbones.cache import FeatureCache


def default_cache_dir() -> Path:
    """``$MTLREC_CACHE_DIR/image-features``, else ``~/.cache/mtlrec/image-features``."""
    return Path(os.environ.get("MTLREC_CACHE_DIR", "~/.cache/mtlrec")).expanduser() / "image-features"


class CachedFeatures:
    """The frozen part's output for every catalog image, as one in-memory tensor that grows when
    the catalog does (new images at scoring time). Shared by the fresh copies of an encoder."""

    def __init__(self, paths: Sequence[str], cache: FeatureCache):
        self.paths, self.cache = paths, cache
        self.rows = torch.empty(0)

    def table(self, device: torch.device) -> Tensor:
        if len(self.paths) > len(self.rows):  # a Python length check: no device sync per step
            new = self.cache.features(self.paths[len(self.rows):])
            self.rows = torch.cat([self.rows.to(new), new]) if len(self.rows) else new
            _report(self.cache, len(new))
        if self.rows.device != device:
            self.rows = self.rows.to(device)
        return self.rows


def _report(cache: FeatureCache, count: int) -> None:
    speed = cache.last_images_per_second
    done = f"extracted {cache.last_computed} at {speed:.1f} img/s" if cache.last_computed else "all cached"
    print(f"image features: {count} images, {done} ({cache.folder})", file=sys.stderr)


def _backbone_lr(part: nn.Module | None, lr: float | None) -> None:
    """The backbone's trained parameters form their own optimizer group (see
    :func:`mtlrec.training.module.parameter_groups`); the image vector's norm keeps the model's."""
    if part is not None and lr is not None:
        part.optimizer_options = {"lr": lr}


class ImageInput(nn.Module):
    """Catalog ids ``[B]`` (or an :class:`ImageBatch` from the loader) -> ``[B, backbone.output_dim]``.

    Args:
        paths: the image column's catalog (id -> file), the transformer's own list.
        backbone: a backbone with ``transform``, ``output_dim``, ``split()`` and ``lr``
            (:class:`~mtlrec.models.backbones.vgg.VGGBackbone`).
        cache: cache the frozen part's output (ignored when nothing is frozen).
        cache_dir: where (default: :func:`default_cache_dir`).
        extract_batch_size: images per forward pass of the one-time extraction.
        extract_threads: its CPU threads (default: one per core, whatever ``torch_threads``).
        norm: ``batch`` (a BatchNorm1d on the image vector) or ``none``.
    """

    def __init__(self, paths: Sequence[str], backbone: nn.Module, cache: bool = True,
                 cache_dir: str | None = None, extract_batch_size: int = 32, norm: str = "batch",
                 extract_threads: int | None = None):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"encoder.kinds.image.norm must be batch or none, got {norm!r}")
        frozen, trained = backbone.split()
        self._whole = (backbone,)  # every block, trained or not, for exported_backbone (not a submodule)
        self.paths = paths
        self.output_dim = backbone.output_dim
        self.norm = nn.BatchNorm1d(self.output_dim) if norm == "batch" else nn.Identity()
        self.store: CachedFeatures | None = None
        augmented = getattr(backbone, "train_transform", None)
        if augmented is not None and cache and frozen is not None:
            raise ValueError(
                "backbone.augment: augmentation changes the pixels at every step, but the frozen blocks' output is "
                "cached (computed once per image); train every block (backbone.freeze=none), run the frozen blocks "
                "on every batch (encoder.kinds.image.cache=false), or drop backbone.augment"
            )
        self.train_pixels = None
        if cache and frozen is not None:
            folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
            feature_cache = FeatureCache(folder, frozen, backbone.transform, extract_batch_size,
                                         progress=sys.stderr.isatty(), threads=extract_threads)
            self.store = CachedFeatures(paths, feature_cache)
            self.frozen_key = feature_cache.weights
            self.trained = trained  # None when all is frozen
            _backbone_lr(trained, backbone.lr)
            self.store.table(torch.device("cpu"))  # the one-time extraction happens at build time
            self.pixels = None
        else:
            self.backbone = backbone
            _backbone_lr(backbone, backbone.lr)
            self.pixels = PixelLoader(paths, backbone.transform)
            if augmented is not None:
                self.train_pixels = PixelLoader(paths, augmented)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's trained parameters here (none when it is all frozen and cached)."""
        modules = [getattr(self, "trained", None), getattr(self, "backbone", None)]
        return [p for m in modules if isinstance(m, nn.Module) for p in m.parameters()]

    def exported_backbone(self) -> dict[str, Tensor] | None:
        """The whole convolutional base in torchvision's layout when some of it was trained (the
        frozen blocks share their layers, so this is the model's current backbone); ``None`` when
        all of it is frozen (it is then the configured weights, nothing learned)."""
        backbone = self._whole[0]
        return backbone.features_state_dict() if backbone.trainable else None

    def forward(self, x: Tensor | ImageBatch) -> Tensor:
        vectors = self._vectors(x)
        norm = self.norm
        if self.training and isinstance(norm, nn.BatchNorm1d) and vectors.shape[0] == 1:
            # a one-row last batch has no batch statistics: normalise it with the running ones
            return F.batch_norm(vectors, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=False,
                                eps=norm.eps)
        return norm(vectors)

    def _vectors(self, x: Tensor | ImageBatch) -> Tensor:
        if self.store is None:
            if not isinstance(x, ImageBatch):  # no loader wired (e.g. RunScorer): read here
                x = self.pixels(x.cpu()).to(x.device)
            return self.backbone(x.pixels)[x.index]
        table = self.store.table(x.device)
        if self.trained is None:
            return table[x]
        distinct, index = torch.unique(x, return_inverse=True)
        return self.trained(table[distinct])[index]

    def get_extra_state(self) -> dict:
        """A digest of the frozen part's weights travels with the checkpoint: the frozen part
        itself is rebuilt from the config, so a changed weight file must not go unseen."""
        return {"frozen_key": getattr(self, "frozen_key", None)}

    def set_extra_state(self, state: dict) -> None:
        saved, current = state.get("frozen_key"), getattr(self, "frozen_key", None)
        if saved != current:
            raise ValueError(
                f"image backbone: this model was trained with frozen weights {saved}, but the backbone built from the "
                f"config has {current}; the weights file (or init_seed, arch, freeze) changed since training: use the "
                f"run's backbone settings and weights file"
            )

    def batch_transform(self, training: bool = False) -> PixelLoader | None:
        """What the DataLoader's workers must do to this feature's ids (read pixels), if anything;
        ``training``: for training batches (augmented, when ``backbone.augment`` asks)."""
        return self.train_pixels if training and self.train_pixels is not None else self.pixels

    def shared_objects(self) -> list[object]:
        """Kept, not copied, by ``InputEncoder.fresh_copy``: the catalog and the cached features."""
        return [obj for obj in (self.paths, self.store) if obj is not None]

    def reset_parameters(self) -> None:
        """Only the normalisation is redrawn: a backbone's weights are where transfer starts, so
        every task's copy starts from the same (pretrained or ``init_seed``) backbone."""
        if isinstance(self.norm, nn.BatchNorm1d):
            self.norm.reset_parameters()
