"""An image feature feeds every architecture ``conf/arch`` declares, through every backbone config
``conf/backbone`` declares; the last shared layer GradNorm balances on is never in the backbone, and
the shared representation every architecture exposes is the encoder's output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mtlrec.build import build_architecture, build_datamodule
from mtlrec.train import CONFIG_DIR
from tests.conftest import skip_unless_arch_fits

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"
ARCHS = sorted(p.stem for p in (Path(CONFIG_DIR) / "arch").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (Path(CONFIG_DIR) / "backbone").glob("*.yaml") if p.stem != "none")


def _cfg(*overrides: str):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["data=grocery", f"data.root={FIXTURE}", "backbone.input_size=32",
                                            *overrides])


@pytest.fixture(scope="module")
def datamodule():
    return build_datamodule(_cfg("backbone=vgg16"))


@pytest.mark.parametrize("arch", ARCHS)
def test_an_image_feature_feeds_every_architecture(datamodule, arch, tmp_path, monkeypatch) -> None:
    skip_unless_arch_fits(arch, datamodule.schema.task_names)
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(tmp_path))
    model = build_architecture(_cfg("backbone=vgg16", "backbone.freeze=1", f"arch={arch}"), datamodule.schema,
                               datamodule.preprocessor)
    outputs = model(datamodule.tables["train"][torch.arange(6)])
    assert {t: tuple(v.shape) for t, v in outputs.logits.items()} == {"fine": (6, 81), "coarse": (6, 43),
                                                                       "category": (6, 3)}
    backbone = {id(p) for n, p in model.named_parameters() if ".trained." in n}
    assert backbone, "the last block trains, so it is in the model"
    view = model.shared_model()
    assert not backbone & {id(p) for p in view.last_shared_parameters}  # GradNorm's W is above the backbone
    if arch == "single_task":
        assert outputs.features is None and not view.encoder_parameters
    else:
        assert outputs.features.shape == (6, 512) and backbone <= {id(p) for p in view.encoder_parameters}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_config_builds(datamodule, backbone, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(tmp_path))
    cfg = _cfg(f"backbone={backbone}")
    assert cfg.backbone.weights is None and cfg.backbone.freeze == "all"  # offline-safe defaults, the classic recipe
    model = build_architecture(cfg, datamodule.schema, datamodule.preprocessor)
    assert model(datamodule.tables["val"][torch.arange(4)]).logits["fine"].shape == (4, 81)
