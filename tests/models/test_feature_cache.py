"""The frozen-feature cache: computed once, hit on the second pass (the backbone is not called),
missed after the weights or the transform change, keyed by file content (a renamed file hits, an
edited one misses), and the cached features equal the backbone's own output."""

from __future__ import annotations

import shutil

import pytest
import torch
from torchvision.io import write_png
from torchvision.models import VGG16_Weights

from mtlrec.data.images import load_image
from mtlrec.models.backbones.cache import FeatureCache
from mtlrec.models.backbones.vgg import VGGBackbone


@pytest.fixture(scope="module")
def backbone() -> VGGBackbone:
    torch.manual_seed(0)
    return VGGBackbone(input_size=32)


@pytest.fixture
def images(tmp_path):
    g = torch.Generator().manual_seed(0)
    paths = []
    for i, (h, w) in enumerate([(40, 50), (36, 36), (60, 45)]):
        path = tmp_path / "img" / f"item{i}.png"
        path.parent.mkdir(exist_ok=True)
        write_png(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), str(path))
        paths.append(path)
    return paths


def test_second_pass_is_a_hit_and_features_equal_the_backbone(backbone, images, tmp_path) -> None:
    cache = FeatureCache(tmp_path / "cache", backbone, backbone.transform, batch_size=2)
    first = cache.features(images + [images[0]])  # a repeated image is computed once
    assert cache.calls == 2 and tuple(first.shape) == (4, 512) and torch.equal(first[0], first[3])
    again = FeatureCache(tmp_path / "cache", backbone, backbone.transform)  # a later run of a sweep
    assert torch.equal(again.features(images), first[:3]) and again.calls == 0
    with torch.no_grad():
        direct = backbone.eval()(torch.stack([backbone.transform(load_image(p)) for p in images]))
    torch.testing.assert_close(first[:3], direct)


def test_the_key_is_the_content_the_weights_and_the_transform(backbone, images, tmp_path) -> None:
    root = tmp_path / "cache"
    FeatureCache(root, backbone, backbone.transform).features(images)
    renamed = images[0].with_name("renamed.png")
    shutil.copy(images[0], renamed)
    cache = FeatureCache(root, backbone, backbone.transform)
    cache.features([renamed])
    assert cache.calls == 0  # same content, another name: a hit
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(renamed))
    cache.features([renamed])
    assert cache.calls == 1  # edited content: a miss
    other_transform = VGG16_Weights.IMAGENET1K_V1.transforms(crop_size=40, resize_size=46)
    changed = FeatureCache(root, backbone, other_transform)
    changed.features(images)
    assert changed.calls == 1 and changed.folder != cache.folder
    torch.manual_seed(5)
    retrained = VGGBackbone(input_size=32)
    with torch.no_grad():
        retrained.load_state_dict(backbone.state_dict())
        retrained.blocks[4][0].bias.add_(1e-3)  # one changed weight
    moved = FeatureCache(root, retrained, retrained.transform)
    moved.features(images)
    assert moved.calls == 1 and moved.folder != cache.folder
