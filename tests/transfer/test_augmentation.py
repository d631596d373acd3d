"""Image augmentation from config (torchvision transforms v2): training batches are augmented,
validation and test batches never are; with a cached frozen part the combination is refused in one
line; a run with it trains end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule, build_module
from mtlrec.data.images import load_image
from mtlrec.train import CONFIG_DIR
from tests.conftest import train_in_process

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"
BASE = ["data=grocery", f"data.root={FIXTURE}", "backbone=vgg16_bn", "backbone.input_size=32", "arch=shared_bottom",
        "trainer.max_epochs=1", "console.progress_bar=false", "+data.loader.num_workers=0"]
FLIP = "backbone.augment=[{_target_: torchvision.transforms.v2.RandomHorizontalFlip, p: 1.0}]"


def _build(overrides, tmp_path):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"+encoder.kinds.image.cache_dir={tmp_path}"])
    datamodule = build_datamodule(cfg)
    return build_module(cfg, datamodule), datamodule


def test_training_batches_are_augmented_and_evaluation_batches_are_not(tmp_path) -> None:
    _, dm = _build([*BASE, "backbone.freeze=none", FLIP], tmp_path)
    ids = dm.tables["train"].features["image"][:4]
    train_pixels = dm.train_batch_transforms["image"](ids).pixels
    eval_pixels = dm.batch_transforms["image"](ids).pixels
    loader = dm.batch_transforms["image"]
    mirrored = torch.stack([loader.transform(load_image(loader.paths[i]).flip(-1)) for i in ids.unique().tolist()])
    assert torch.equal(train_pixels, mirrored)  # p=1: every training image mirrored, then the weights' transform
    assert not torch.equal(train_pixels, eval_pixels)
    first = next(iter(dm.val_dataloader())).features["image"]
    assert torch.equal(first.pixels, dm.batch_transforms["image"](dm.tables["val"].features["image"][:len(
        dm.tables["val"])]).pixels)


@pytest.mark.parametrize("freeze", ["all", "1"])
def test_augmentation_with_a_cached_frozen_part_is_refused_in_one_line(tmp_path, freeze) -> None:
    with pytest.raises(ValueError, match="backbone.augment: augmentation changes the pixels") as err:
        _build([*BASE, f"backbone.freeze={freeze}", FLIP], tmp_path)
    assert "\n" not in str(err.value)


def test_without_the_cache_frozen_blocks_may_be_augmented(tmp_path) -> None:
    _, dm = _build([*BASE, "backbone.freeze=1", "+encoder.kinds.image.cache=false", FLIP], tmp_path)
    assert "image" in dm.train_batch_transforms


@pytest.mark.slow
def test_a_run_with_augmentation_trains_and_exports_its_backbone(tmp_path) -> None:
    overrides = [*BASE, "backbone.freeze=none", FLIP, f"+encoder.kinds.image.cache_dir={tmp_path / 'cache'}"]
    record, _ = train_in_process(tmp_path / "run", overrides)
    assert record["status"] == "complete" and record["backbone_file"] == "backbone.pth"
    state = torch.load(tmp_path / "run" / "backbone.pth", weights_only=True)
    assert "features.0.weight" in state and "features.1.running_mean" in state  # torchvision's layout
