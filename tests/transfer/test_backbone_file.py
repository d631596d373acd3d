"""The pieces of an image transfer recipe: a catalogue cut into source and target categories, k
photos per class, and a trained backbone written in torchvision's layout that ``weights_path``
reads back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrec.data.grocery import load_grocery
from mtlrec.data.schema import SchemaError
from mtlrec.models.backbones.vgg import VGGBackbone
from mtlrec.transfer.backbone_file import BACKBONE_FILE, save_trained_backbone

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"


def test_kept_categories_renumber_the_classes_and_drop_a_constant_category_task() -> None:
    whole = load_grocery(FIXTURE)
    packages = load_grocery(FIXTURE, categories=["Packages"])
    assert packages.schema.task_names == ["fine", "coarse"]
    for split, frame in packages.splits.items():
        assert set(frame["category"]) == {"Packages"}
        original = whole.splits[split][whole.splits[split]["category"] == "Packages"]
        assert list(frame["image"]) == list(original["image"])
    fine = sorted(set().union(*(set(f["fine_id"]) for f in packages.splits.values())))
    assert fine == list(range(packages.schema.task("fine").num_classes))
    two = load_grocery(FIXTURE, categories=["Fruit", "Vegetables"])
    assert two.schema.task("category").classes == ("Fruit", "Vegetables")
    with pytest.raises(SchemaError, match="category is constant"):
        load_grocery(FIXTURE, main_task="category", categories=["Fruit"])
    with pytest.raises(SchemaError, match="data.categories"):
        load_grocery(FIXTURE, categories=["Meat"])


def test_shots_keep_k_training_photos_per_class_with_a_data_seed() -> None:
    whole = load_grocery(FIXTURE)
    few = load_grocery(FIXTURE, shots=1, shots_seed=3)
    counts = few.splits["train"]["fine_id"].value_counts()
    assert (counts == 1).all() and set(counts.index) == set(whole.splits["train"]["fine_id"])
    assert few.splits["train"].equals(load_grocery(FIXTURE, shots=1, shots_seed=3).splits["train"])
    assert not few.splits["train"].equals(load_grocery(FIXTURE, shots=1, shots_seed=4).splits["train"])
    for split in ("val", "test"):
        assert few.splits[split].equals(whole.splits[split])
    with pytest.raises(SchemaError, match="data.shots=0"):
        load_grocery(FIXTURE, shots=0)


def test_a_written_backbone_is_read_back_exactly_by_weights_path(tmp_path) -> None:
    trained = VGGBackbone("vgg16_bn", freeze="none", input_size=32, init_seed=1)
    with torch.no_grad():  # make it differ from any init_seed, BatchNorm statistics included
        for tensor in trained.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01)
    torch.save(trained.features_state_dict(), tmp_path / "b.pth")
    again = VGGBackbone("vgg16_bn", weights_path=str(tmp_path / "b.pth"), freeze="all", input_size=32, init_seed=2)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(trained.eval()(images), again.eval()(images))


def test_only_a_trained_backbone_is_written(tmp_path) -> None:
    """Through the real image input (what an architecture holds): a wholly frozen backbone is the
    configured weights, nothing learned, so no file; a partly trained one is written whole."""
    from mtlrec.models.inputs.image import ImageInput

    frozen = ImageInput([], VGGBackbone("vgg16", freeze="all", input_size=32), cache=False)
    assert save_trained_backbone(frozen, "fine", tmp_path) is None and not (tmp_path / BACKBONE_FILE).exists()
    backbone = VGGBackbone("vgg16", freeze=1, input_size=32)
    trained = ImageInput([], backbone, cache=False)
    assert save_trained_backbone(trained, "fine", tmp_path) == tmp_path / BACKBONE_FILE
    written = torch.load(tmp_path / BACKBONE_FILE)
    expected = backbone.features_state_dict()
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in expected)
    assert not list(tmp_path.glob(".backbone-*"))  # no temporary file left behind
