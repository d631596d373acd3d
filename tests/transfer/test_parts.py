"""Fine-tuning by part, for every architecture in conf/arch: its declared parts cover each
parameter exactly once; ``finetune.freeze`` freezes exactly the declared part (counted, and its
values unchanged by a training step while the rest moves); ``finetune.lr`` gives exactly that
part its own optimizer group; an unknown part is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule, build_module
from mtlrec.models.base import PARTS
from mtlrec.train import CONFIG_DIR

ARCHS = sorted(p.stem for p in (Path(CONFIG_DIR) / "arch").glob("*.yaml"))
TASKS = ("[{name: click, kind: binary}, {name: cvr, kind: binary, label: conversion, mask: click, "
         "sample_space: clicked}, {name: ctcvr, kind: binary, label: ctcvr_label}]")


@pytest.fixture(scope="module")
def impressions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("impressions")
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("val", 200), ("test", 200)):
        click = np.tile([0, 1], n // 2)
        conversion = click * np.tile([0, 0, 1, 1], n // 4)
        pd.DataFrame({"user": rng.integers(0, 30, n), "shop": rng.choice(list("abcdef"), n),
                      "price": rng.normal(size=n), "click": click, "conversion": conversion}
                     ).to_csv(folder / f"{split}.csv", index=False)
    return folder


def _module(folder: Path, arch: str, *extra: str):
    derived = "data.derived={ctcvr_label: {from: conversion, op: '==', value: 1, where: click}}"
    overrides = ["data=tabular", f"data.root={folder}", "data.files={train: train.csv, val: val.csv, test: test.csv}",
                 "data.features={categorical: [user, shop], numeric: [price]}", f"data.tasks={TASKS}",
                 "data.main_task=click", derived, "data.loader.batch_size=64", f"arch={arch}", *extra]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    return build_module(cfg, datamodule), datamodule


def _one_step(module, datamodule) -> None:
    optimizer = module.configure_optimizers()  # the module's own, as Lightning calls it
    batch = next(iter(datamodule._loader("train", 64, True)))
    losses = module.task_losses(module(batch), batch)
    optimizer.zero_grad()
    module.weighting.backward(losses, lambda loss, **kw: loss.backward(**kw))
    optimizer.step()


@pytest.mark.parametrize("arch", ARCHS)
def test_the_parts_cover_every_parameter_once(arch, impressions) -> None:
    module, _ = _module(impressions, arch)
    parts = module.architecture.parts()
    assert list(parts) == list(PARTS)
    ids = [id(p) for params in parts.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(module.architecture.parameters()))
    assert parts["towers"] and parts["embeddings"]  # every architecture here has both


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("part", ["embeddings", "bottom", "gates", "towers"])
def test_freezing_a_part_freezes_exactly_it(arch, part, impressions) -> None:
    module, datamodule = _module(impressions, arch, f"finetune.freeze=[{part}]")
    parts = module.architecture.parts()
    if not parts[part]:  # an architecture without this part: freezing it freezes nothing
        assert all(p.requires_grad for p in module.architecture.parameters())
        return
    frozen = {id(p) for p in parts[part]}
    assert all(not p.requires_grad for p in parts[part])
    assert all(p.requires_grad for p in module.architecture.parameters() if id(p) not in frozen)
    before = {n: p.detach().clone() for n, p in module.architecture.named_parameters()}
    _one_step(module, datamodule)
    moved = []
    for name, param in module.architecture.named_parameters():
        if id(param) in frozen:
            assert torch.equal(param, before[name]), f"{name} of the frozen {part} moved"
        elif not torch.equal(param, before[name]):
            moved.append(name)
    assert moved, "nothing else trained"
    shared = module.weighting._model.shared_parameters
    assert not {id(p) for p in shared} & frozen  # the weighting never treats a frozen part as shared


@pytest.mark.parametrize("arch", ["mmoe", "ple", "shared_bottom"])
def test_a_part_learning_rate_is_a_group_of_exactly_that_part(arch, impressions) -> None:
    module, _ = _module(impressions, arch, "finetune.lr={towers: 0.5}")
    groups = module.configure_optimizers().param_groups
    special = [g for g in groups if g["lr"] == 0.5]
    assert len(special) == 1
    assert {id(p) for p in special[0]["params"]} == {id(p) for p in module.architecture.parts()["towers"]}
    assert all(g["lr"] == 1e-3 for g in groups if g is not special[0])


def test_an_unknown_part_is_refused(impressions) -> None:
    with pytest.raises(ValueError, match=r"finetune.freeze: unknown part\(s\) \['expert'\]; the parts are embeddings"):
        _module(impressions, "mmoe", "finetune.freeze=[expert]")
