"""The image feature's encoder layer under each freezing policy: what it computes equals the
backbone's own output, what is frozen is cached (the CNN does not run again), each distinct image
of a batch is encoded once, frozen BatchNorm statistics stay put through a training epoch, and the
trained backbone parameters get their own learning rate."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.grocery import load_grocery
from mtlrec.data.images import ImageBatch, load_image
from mtlrec.models.architectures.mmoe import MMoE
from mtlrec.models.backbones.vgg import VGGBackbone
from mtlrec.models.inputs.encoder import build_encoder
from mtlrec.models.inputs.image import ImageInput
from mtlrec.training.module import MultiTaskModule
from mtlrec.weighting.fixed import FixedWeighting

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"


@pytest.fixture(scope="module")
def datamodule() -> TabularDataModule:
    dm = TabularDataModule(load_grocery(FIXTURE), batch_size=8, eval_batch_size=16)
    dm.setup()
    return dm


def _paths(dm) -> list[str]:
    return dm.preprocessor.transformers["image"].paths


def _direct(backbone: VGGBackbone, paths, ids) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(torch.stack([backbone.transform(load_image(paths[i])) for i in ids]))


@pytest.mark.parametrize("freeze", ["all", 1])
def test_cached_layers_compute_what_the_backbone_computes(datamodule, freeze, tmp_path) -> None:
    backbone = VGGBackbone(input_size=32, freeze=freeze)
    layer = ImageInput(_paths(datamodule), backbone, cache_dir=tmp_path, norm="none").eval()
    ids = torch.tensor([3, 0, 3, 17])
    with torch.no_grad():
        out = layer(ids)
    assert out.shape == (4, 512)
    torch.testing.assert_close(out, _direct(backbone, _paths(datamodule), ids.tolist()), rtol=1e-4, atol=1e-5)


def test_a_second_build_reads_the_cache_and_never_runs_the_cnn(datamodule, tmp_path) -> None:
    first = ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path)
    assert first.store.cache.calls > 0 and first.store.cache.last_computed == 48
    second = ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path)
    assert second.store.cache.calls == 0 and torch.equal(second.store.rows, first.store.rows)
    # random weights come from init_seed, not from the global seed: the same extractor, the same key
    torch.manual_seed(123)
    assert ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path).store.cache.calls == 0
    other = ImageInput(_paths(datamodule), VGGBackbone(input_size=32, init_seed=1), cache_dir=tmp_path)
    assert other.store.cache.last_computed == 48  # other weights, another key


@pytest.mark.parametrize("freeze, trained_blocks", [("all", 0), (1, 1), (2, 2), ("none", 5)])
def test_only_the_unfrozen_blocks_are_model_parameters(datamodule, freeze, trained_blocks, tmp_path) -> None:
    backbone = VGGBackbone(input_size=32, freeze=freeze)
    expected = sum(p.numel() for block in backbone.blocks[5 - trained_blocks:] for p in block.parameters())
    layer = ImageInput(_paths(datamodule), backbone, cache_dir=tmp_path, norm="none")
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == expected
    # a frozen part is cached, so it is not in the state dict either (checkpoints stay small)
    assert sum(t.numel() for t in layer.state_dict().values() if torch.is_tensor(t)) == (expected if freeze != "none" else
                                                                    sum(p.numel() for p in backbone.parameters()))


def test_each_distinct_image_of_a_batch_is_encoded_once(datamodule, tmp_path) -> None:
    backbone = VGGBackbone(input_size=32, freeze=1)
    layer = ImageInput(_paths(datamodule), backbone, cache_dir=tmp_path, norm="none").eval()
    seen = []
    layer.trained.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        out = layer(torch.tensor([5, 5, 9, 5, 9]))
    assert seen == [2] and torch.equal(out[0], out[3]) and torch.equal(out[2], out[4])


def test_a_trained_backbone_reads_pixels_from_the_loader_workers(datamodule, tmp_path) -> None:
    backbone = VGGBackbone(input_size=32, freeze="none")
    layer = ImageInput(_paths(datamodule), backbone, norm="none").eval()
    loader = layer.batch_transform()
    ids = torch.tensor([4, 4, 11])
    batch = loader(ids)
    assert isinstance(batch, ImageBatch) and batch.pixels.shape == (2, 3, 32, 32) and batch.index.tolist() == [0, 0, 1]
    with torch.no_grad():
        torch.testing.assert_close(layer(batch), layer(ids))  # without a loader the layer reads itself
    encoder = build_encoder(datamodule.preprocessor, backbone=backbone)
    assert set(encoder.batch_transforms()) == {"image"}


def _fit_one_epoch(dm, backbone, tmp_path) -> MultiTaskModule:
    encoder = build_encoder(dm.preprocessor, backbone=backbone, kinds={"image": {"cache": False}})
    module = MultiTaskModule(dm.schema, MMoE(dm.schema, encoder, num_experts=2, expert_units=[8], tower_units=[8]),
                             FixedWeighting())
    dm.set_batch_transforms({"image": encoder.layers["image"].batch_transform()})
    dm.num_workers = 0
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    dm.set_batch_transforms({})
    return module


def test_frozen_batchnorm_statistics_stay_put_through_a_training_epoch(datamodule, tmp_path) -> None:
    torch.manual_seed(0)
    backbone = VGGBackbone("vgg16_bn", input_size=32, freeze=1)
    stats = lambda b: [m.running_mean.clone() for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # noqa: E731
    frozen_before, before = stats(backbone.blocks[:4]), stats(backbone.blocks[4])
    _fit_one_epoch(datamodule, backbone, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, stats(backbone.blocks[:4])))
    assert not any(torch.equal(a, b) for a, b in zip(before, stats(backbone.blocks[4])))  # the trained block moved


def test_trained_backbone_parameters_get_the_backbone_learning_rate(datamodule, tmp_path) -> None:
    backbone = VGGBackbone(input_size=32, freeze=1, lr=1e-4)
    encoder = build_encoder(datamodule.preprocessor, backbone=backbone, kinds={"image": {"cache_dir": str(tmp_path)}})
    module = MultiTaskModule(datamodule.schema, MMoE(datamodule.schema, encoder, num_experts=2), FixedWeighting(),
                             optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    groups = module.configure_optimizers().param_groups
    trained = {id(p) for p in encoder.layers["image"].trained.parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert {id(p) for p in groups[1]["params"]} == trained
    assert not trained & {id(p) for p in groups[0]["params"]}


def test_an_image_feature_needs_a_backbone_and_a_backbone_needs_an_image(datamodule, tiny_preprocessed) -> None:
    with pytest.raises(ValueError, match="feature 'image' is an image: choose an image backbone"):
        build_encoder(datamodule.preprocessor)
    with pytest.raises(ValueError, match="the dataset has no image feature"):
        build_encoder(tiny_preprocessed[0], backbone=VGGBackbone(input_size=32))


def test_a_checkpoint_refuses_a_backbone_with_other_frozen_weights(datamodule, tmp_path) -> None:
    trained = ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path)
    same = ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path)
    same.load_state_dict(trained.state_dict())
    other = ImageInput(_paths(datamodule), VGGBackbone(input_size=32, init_seed=1), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="image backbone: this model was trained with frozen weights"):
        other.load_state_dict(trained.state_dict())


def test_a_one_row_training_batch_is_normalised_with_the_running_statistics(datamodule, tmp_path) -> None:
    layer = ImageInput(_paths(datamodule), VGGBackbone(input_size=32), cache_dir=tmp_path).train()
    one = layer(torch.tensor([7]))
    assert one.shape == (1, 512) and torch.isfinite(one).all()
    assert torch.equal(layer.norm.running_mean, torch.zeros(512))  # a one-row batch moves no statistic
