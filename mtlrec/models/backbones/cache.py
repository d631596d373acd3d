"""Frozen-backbone features computed once per unique image and kept on disk.

With a frozen backbone the CNN is a fixed function of (image, weights, transform), so running it
every epoch, and again in every run of a sweep, is waste: 99 % of a frozen VGG16 epoch is the
convolutional base. The cache key says exactly what the feature depends on:

* the image file's *content* (sha256), not its path, so a moved or renamed file is still a hit
  and an edited one is a miss;
* the backbone's weights (a digest of its state dict) and its configuration;
* the transform (its ``repr``: resize, crop, normalisation constants).

A changed weight file or transform therefore lands in another key folder instead of silently
reusing stale features. Each feature is written atomically (temp file + rename), so a killed
extraction leaves only complete entries and resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from mtlrec.data.images import load_image
from mtlrec.report.output import write_with


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def model_key(backbone: nn.Module, transform: Callable, weights: str | None = None) -> str:
    """A digest of the backbone's weights and buffers, its structure (``repr``: layers, pooling),
    the transform (its ``repr`` and its ``antialias``, which the ``repr`` omits) and the torch and
    torchvision versions (JPEG decoding and resizing numerics change between releases).
    ``weights``: the backbone's :func:`weights_digest`, when already computed."""
    described = f"{backbone!r}|{transform!r}|antialias={getattr(transform, 'antialias', None)}"
    versions = f"torch={torch.__version__}|torchvision={torchvision.__version__}"
    weights = weights or weights_digest(backbone)
    return hashlib.sha256(f"{described}|{versions}|{weights}".encode()).hexdigest()[:20]


class FeatureCache:
    """``cache.features(paths)`` -> ``[N, D]`` float32, computing only what is not on disk yet.

    ``calls`` counts backbone forward passes of this object (what the tests watch), and
    ``last_images_per_second`` the extraction speed of the last call that computed anything.
    The extraction runs on ``device`` (default: a GPU when there is one, else the CPU) with
    ``threads`` intra-op CPU threads (default: one per core, whatever the run's ``torch_threads``:
    the one-time pass through a CNN is the job intra-op threads pay off for).
    """

    def __init__(self, root: str | os.PathLike, backbone: nn.Module, transform: Callable, batch_size: int = 32,
                 progress: bool = False, device: str | None = None, threads: int | None = None):
        self.backbone, self.transform, self.batch_size, self.progress = backbone, transform, batch_size, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = threads or os.cpu_count() or 1
        self.weights = weights_digest(backbone)  # hashed once: tens of MB of weights
        self.folder = Path(root).expanduser() / model_key(backbone, transform, self.weights)
        self.calls = 0
        self.last_images_per_second: float | None = None
        self.last_computed = 0  # images computed by the last call of features()

    def _entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def features(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        digests = [file_sha256(p) for p in paths]
        missing = {d: p for d, p in zip(digests, paths) if not self._entry(d).exists()}
        self.last_computed = len(missing)
        if missing:
            self._compute(missing)
        return torch.from_numpy(np.stack([np.load(self._entry(d)) for d in digests])) if digests else torch.empty(0)

    @torch.no_grad()
    def _compute(self, missing: dict[str, str | os.PathLike]) -> None:
        self.backbone.to(self.device).eval()
        items = list(missing.items())
        threads, run_threads = self.threads, torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            self._extract(items)
        finally:
            torch.set_num_threads(run_threads)

    def _extract(self, items: list[tuple[str, str | os.PathLike]]) -> None:
        started = time.perf_counter()
        bar = _progress(len(items)) if self.progress else None
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            images = torch.stack([self.transform(load_image(p)) for _, p in chunk])
            out = self.backbone(images.to(self.device)).float().cpu().numpy()
            self.calls += 1
            for (digest, _), row in zip(chunk, out):
                write_with(self._entry(digest), lambda fh, row=row: np.save(fh, row))
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        self.last_images_per_second = len(items) / max(time.perf_counter() - started, 1e-9)


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="image features (one-time)", unit="img")
