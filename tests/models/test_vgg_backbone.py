"""The VGG16 backbone: output shapes per input size, exactly the intended parameters frozen per
policy, frozen BatchNorm statistics unchanged by a training step, a saved state dict loaded
exactly, and the preprocessing taken from the weights object. Tiny inputs keep it fast; nothing is
downloaded (random or local weights only)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights

from mtlrec.models.backbones.vgg import VGGBackbone, WeightsNotAvailableError

BLOCK_PARAMS_VGG16 = [38_720, 221_440, 1_475_328, 5_899_776, 7_079_424]  # conv weights + biases per block


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("size, pool, dim", [(32, "avg", 512), (64, "avg", 512), (32, "flatten", 512),
                                             (64, "flatten", 512 * 2 * 2), (96, "flatten", 512 * 3 * 3)])
def test_output_shape_per_input_size(size, pool, dim) -> None:
    backbone = VGGBackbone(input_size=size, pool=pool)
    assert backbone.output_dim == dim
    assert tuple(backbone(torch.randn(2, 3, size, size)).shape) == (2, dim)


@pytest.mark.parametrize("freeze, trainable", [("all", 0), ("none", sum(BLOCK_PARAMS_VGG16)),
                                               (1, BLOCK_PARAMS_VGG16[4]), (2, sum(BLOCK_PARAMS_VGG16[3:]))])
def test_each_freeze_policy_freezes_exactly_the_intended_parameters(freeze, trainable) -> None:
    backbone = VGGBackbone(freeze=freeze, input_size=32)
    assert sum(p.numel() for p in backbone.parameters()) == sum(BLOCK_PARAMS_VGG16)  # the conv base: 14.7 M
    assert _trainable(backbone) == trainable
    assert backbone.trainable == (trainable > 0)


def test_frozen_batchnorm_statistics_do_not_move_in_a_training_step() -> None:
    torch.manual_seed(0)
    backbone = VGGBackbone(arch="vgg16_bn", freeze=1, input_size=32)  # blocks 1-4 frozen, block 5 trains
    before = {n: b.clone() for n, b in backbone.named_buffers() if "running_mean" in n}
    backbone.train()  # what Lightning does at every epoch start
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    backbone(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    optimizer.step()
    frozen_moved = [n for n, b in backbone.named_buffers() if n in before and n.startswith(("blocks.0", "blocks.3"))
                    and not torch.equal(b, before[n])]
    trained_moved = [n for n, b in backbone.named_buffers() if n in before and n.startswith("blocks.4")
                     and not torch.equal(b, before[n])]
    assert not frozen_moved and trained_moved
    assert not backbone.blocks[0].training and backbone.blocks[4].training


def test_weights_path_loads_a_saved_state_dict_exactly(tmp_path) -> None:
    torch.manual_seed(1)
    source = VGGBackbone(input_size=32)
    # torchvision's layout: features.<index>.weight, as in the ImageNet checkpoint file
    state = {f"features.{k}": v for k, v in nn.Sequential(*[l for b in source.blocks for l in b]).state_dict().items()}
    torch.save(state, tmp_path / "vgg16_features.pth")
    torch.manual_seed(2)
    loaded = VGGBackbone(weights_path=str(tmp_path / "vgg16_features.pth"), input_size=32)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))
    with pytest.raises(WeightsNotAvailableError, match="does not fit this backbone"):
        VGGBackbone(arch="vgg16_bn", weights_path=str(tmp_path / "vgg16_features.pth"), input_size=32)
    with pytest.raises(WeightsNotAvailableError, match="backbone.weights_path: no file at"):
        VGGBackbone(weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("arch, enum", [("vgg16", VGG16_Weights), ("vgg16_bn", VGG16_BN_Weights)])
def test_the_transform_comes_from_the_weights_object(arch, enum) -> None:
    backbone = VGGBackbone(arch=arch, input_size=64)
    reference = enum.IMAGENET1K_V1.transforms()
    t = backbone.transform
    assert (t.mean, t.std, t.interpolation) == (reference.mean, reference.std, reference.interpolation)
    assert t.crop_size == [64] and t.resize_size == [73]  # 64 · 256/224, the weights' own ratio
    assert tuple(t(torch.rand(3, 90, 120)).shape) == (3, 64, 64)


def test_bad_options_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match="backbone.freeze must be all, none or the number of last blocks"):
        VGGBackbone(freeze=7, input_size=32)
    with pytest.raises(ValueError, match=r"backbone.weights: 'IMAGENET' is not a weights name of VGG16_Weights"):
        VGGBackbone(weights="IMAGENET", input_size=32)
    with pytest.raises(ValueError, match="give one of them, not both"):
        VGGBackbone(weights="IMAGENET1K_V1", weights_path="x.pth")


def test_imagenet_weights_unreachable_give_one_clear_error(tmp_path) -> None:
    """The real weights-API path, made to fail without touching the network: an empty torch hub
    cache and a proxy that refuses every connection (so no machine downloads 528 MB here)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "hub"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    code = ("from mtlrec.models.backbones.vgg import VGGBackbone\n"
            "try:\n    VGGBackbone(weights='IMAGENET1K_V1', input_size=32)\n"
            "except FileNotFoundError as err:\n    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    out = out.stdout.strip().splitlines()[-1]  # after torch hub's own "Downloading: …" line
    assert out.startswith("WeightsNotAvailableError backbone.weights=IMAGENET1K_V1: could not fetch "
                          "https://download.pytorch.org/models/vgg16-397923af.pth"), out
    assert "backbone.weights_path=<file>" in out
    assert not list((tmp_path / "hub").rglob("*.pth"))  # nothing half-downloaded left behind
