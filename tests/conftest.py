"""Shared fixtures: a tiny mixed-kind schema, a tiny raw dataset with learnable signal, the tensors
it preprocesses to, and small-sized factories for every architecture.

The tiny dataset has all three task kinds and both kinds of feature:

* features ``color``, ``city`` (categorical), ``age``, ``income`` (numeric, ``income`` with log1p);
* ``ctr`` (binary, label ``click``), ``cvr`` (binary, label ``buy``, only where ``click`` = 1),
  ``kind`` (multiclass, 3 classes), ``spend`` (regression, only where ``click`` = 1);
* ``user_id`` is a declared-excluded column (an identifier, never a feature).

Labels of masked tasks are NaN outside their sample space, as a real dataset would have them. The
validation split holds a city (``"zz-unseen"``) that never occurs in training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec
from mtlrec.data.table import TensorTable
from mtlrec.models.architectures.cross_stitch import CrossStitch
from mtlrec.models.architectures.mmoe import MMoE
from mtlrec.models.architectures.omoe import OMoE
from mtlrec.models.architectures.ple import CGC, PLE
from mtlrec.models.architectures.shared_bottom import SharedBottom
from mtlrec.models.architectures.single_task import SingleTask
from mtlrec.models.base import Architecture
from mtlrec.models.inputs.encoder import InputEncoder, build_encoder


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked with an extra's name (``@pytest.mark.sweep``) skip, saying why and how to
    install it, when that extra is not installed. Never raises at collection."""
    from mtlrec.extras import EXTRAS, install_hint, missing_modules

    for item in items:
        for extra in EXTRAS:
            if item.get_closest_marker(extra) is not None:
                missing = missing_modules(extra)
                if missing:
                    reason = f"needs the '{extra}' extra ({', '.join(missing)} missing): {install_hint(extra)}"
                    item.add_marker(pytest.mark.skip(reason=reason))


# The models under test are tiny: intra-op threads only add synchronisation, and on a small shared
# machine (2 cores, other jobs running) two spinning threads per op slow a short fit down ten-fold.
torch.set_num_threads(1)

COLORS = ("red", "green", "blue")
CITIES = ("a", "b", "c", "d")
UNSEEN_CITY = "zz-unseen"
COLOR_EFFECT = {"red": 1.0, "green": -1.0, "blue": 0.0}
CITY_KIND = {"a": 0, "b": 1, "c": 2, "d": 0, UNSEEN_CITY: 1}


def tiny_schema_() -> Schema:
    return Schema(
        features=(
            FeatureSpec("color", "categorical"),
            FeatureSpec("city", "categorical"),
            FeatureSpec("age", "numeric"),
            FeatureSpec("income", "numeric", {"log1p": True}),
        ),
        tasks=(
            TaskSpec("ctr", "binary", "click"),
            TaskSpec("cvr", "binary", "buy", mask="click"),
            TaskSpec("kind", "multiclass", "kind", num_classes=3),
            TaskSpec("spend", "regression", "spend", mask="click"),
        ),
        main_task="ctr",
        excluded=("user_id",),
    )


def make_tiny_frame(n: int, rng: np.random.Generator, cities: tuple[str, ...] = CITIES) -> pd.DataFrame:
    """``n`` rows of the tiny dataset; every label is a (noisy) function of the features."""
    color = rng.choice(COLORS, n)
    city = rng.choice(cities, n)
    age = rng.normal(40.0, 10.0, n)
    income = rng.lognormal(10.0, 1.0, n)
    effect = np.array([COLOR_EFFECT[c] for c in color])
    click = (0.1 * (age - 40.0) + effect + rng.normal(0.0, 0.5, n) > 0).astype(np.float64)
    buy = np.where(click == 1, (age + rng.normal(0.0, 3.0, n) > 40.0).astype(np.float64), np.nan)
    kind = np.array([CITY_KIND[c] for c in city], dtype=np.int64)
    spend = np.where(click == 1, 0.05 * (age - 40.0) + effect + rng.normal(0.0, 0.1, n), np.nan)
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "color": color,
            "city": city,
            "age": age,
            "income": income,
            "click": click,
            "buy": buy,
            "kind": kind,
            "spend": spend,
        }
    )


def make_tiny_raw(num_train: int = 512, num_val: int = 128, num_test: int = 128, seed: int = 0) -> RawDataset:
    rng = np.random.default_rng(seed)
    splits = {
        "train": make_tiny_frame(num_train, rng),
        "val": make_tiny_frame(num_val, rng, cities=CITIES + (UNSEEN_CITY,)),
        "test": make_tiny_frame(num_test, rng),
    }
    return RawDataset(tiny_schema_(), splits, name="tiny")


@pytest.fixture
def tiny_schema() -> Schema:
    return tiny_schema_()


@pytest.fixture
def tiny_categories() -> dict:
    """The tiny dataset's category values: ``colors``, ``cities`` (train) and ``unseen`` (val only)."""
    return {"colors": COLORS, "cities": CITIES, "unseen": UNSEEN_CITY}


@pytest.fixture
def tiny_raw() -> RawDataset:
    return make_tiny_raw()


@pytest.fixture
def tiny_raw_factory() -> Callable[..., RawDataset]:
    """``tiny_raw_factory(num_train=..., num_val=..., num_test=..., seed=...)``."""
    return make_tiny_raw


@pytest.fixture
def tiny_preprocessed(tiny_raw: RawDataset) -> tuple[Preprocessor, dict[str, TensorTable]]:
    pre = Preprocessor(tiny_raw.schema).fit(tiny_raw.splits["train"], split="train")
    return pre, {s: pre.transform(f, split=s) for s, f in tiny_raw.splits.items()}


@pytest.fixture
def tiny_batch(tiny_preprocessed) -> dict:
    """The first 32 training rows as a batch."""
    _, tables = tiny_preprocessed
    return tables["train"][torch.arange(32)]


# -- architectures, sized for speed -----------------------------------------------------------
ARCH_FACTORIES: dict[str, Callable[[Schema, InputEncoder], Architecture]] = {
    "single_task": lambda s, enc: SingleTask(s, enc, hidden_units=(16,), tower_units=(8,)),
    "shared_bottom": lambda s, enc: SharedBottom(s, enc, bottom_units=(16, 12), tower_units=(8,)),
    "cross_stitch": lambda s, enc: CrossStitch(s, enc, column_units=(16, 12), tower_units=(8,)),
    "omoe": lambda s, enc: OMoE(s, enc, num_experts=3, expert_units=(12,), tower_units=(8,)),
    "mmoe": lambda s, enc: MMoE(s, enc, num_experts=3, expert_units=(16, 12), tower_units=(8,)),
    "cgc": lambda s, enc: CGC(s, enc, specific_experts=2, shared_experts=2, expert_units=(12,)),
    "ple1": lambda s, enc: PLE(s, enc, num_levels=1, specific_experts=2, shared_experts=2, expert_units=(12,)),
    "ple2": lambda s, enc: PLE(s, enc, num_levels=2, specific_experts=2, shared_experts=2, expert_units=(12,)),
    "ple3": lambda s, enc: PLE(s, enc, num_levels=3, specific_experts=1, shared_experts=2, expert_units=(12,)),
}
ARCH_NAMES = tuple(ARCH_FACTORIES)
MULTI_TASK_ARCHS = tuple(n for n in ARCH_NAMES if n != "single_task")


@pytest.fixture
def build_arch(tiny_preprocessed) -> Callable[..., Architecture]:
    """``build_arch(name, preprocessor=None, seed=0)``: a seeded small architecture (4-wide
    embeddings) on a fitted preprocessing (the tiny dataset's by default)."""
    pre, _ = tiny_preprocessed

    def build(name: str, preprocessor: Preprocessor | None = None, seed: int = 0):
        return build_small_arch(name, preprocessor or pre, seed)

    return build


def build_small_arch(name: str, preprocessor: Preprocessor, seed: int = 0) -> Architecture:
    torch.manual_seed(seed)
    return ARCH_FACTORIES[name](preprocessor.fitted_schema, build_encoder(preprocessor, embedding_dim=4))


def tower_of(model: Architecture, task: str) -> torch.nn.Module:
    """The module holding only ``task``'s head (its whole net for the single-task baseline)."""
    if isinstance(model, SingleTask):
        return model.nets[task]["tower"]
    return model.towers[task]


@pytest.fixture
def get_tower() -> Callable[[Architecture, str], torch.nn.Module]:
    return tower_of


@pytest.fixture(params=ARCH_NAMES)
def arch_name(request) -> str:
    """Parametrises a test over every architecture (PLE with 1, 2 and 3 levels included)."""
    return request.param


@pytest.fixture(params=MULTI_TASK_ARCHS)
def multi_task_arch_name(request) -> str:
    """Every architecture that shares something between tasks."""
    return request.param


def compose_task_config(output_dir, overrides):
    """The task config ``mtlrec-train`` would get, with ``${hydra:runtime.output_dir}`` = ``output_dir``.

    Sets the global HydraConfig (as Hydra does for a job); callers reset it with
    ``HydraConfig.instance().cfg = None`` when done.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mtlrec import train

    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def build_in_process(overrides):
    """The training module and datamodule ``mtlrec-train`` would build for ``overrides`` (seeded as a
    run is), without training: for tests that step, inspect or edit a real module."""
    from hydra import compose, initialize_config_dir

    from mtlrec import train
    from mtlrec.build import build_datamodule, build_module

    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg)
    return build_module(cfg, datamodule), datamodule


def train_in_process(output_dir, overrides) -> tuple[dict, "DictConfig"]:
    """Train one run as ``mtlrec-train`` would (same config, same ``run``) without a subprocess;
    returns (its results record, its task config)."""
    from hydra.core.hydra_config import HydraConfig

    from mtlrec import train

    try:
        cfg = compose_task_config(output_dir, overrides)
        return train.run(cfg, output_dir, list(overrides)), cfg
    finally:
        HydraConfig.instance().cfg = None


# -- click-to-conversion samples (../shared/data, next to the repository) --------------------------
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The shipped samples are tiny: these overrides point each dataset config at its sample. AliExpress's
# validation share and seed are chosen so that the 2 conversions of the 100-row train sample fall one
# on each side (any other split leaves a split without a positive, which the datamodule refuses).
SAMPLE_OVERRIDES = {
    "aliccp": ["data=aliccp", f"data.root={SHARED_DATA / 'ali-ccp'}",
               "data.files={train: ali_ccp_train_sample.csv, val: ali_ccp_val_sample.csv, "
               "test: ali_ccp_test_sample.csv}"],
    "aliexpress": ["data=aliexpress", f"data.root={SHARED_DATA / 'aliexpress'}",
                   "data.files={train: aliexpress_train_sample.csv, test: aliexpress_test_sample.csv}",
                   "data.split.val_share=0.2", "data.split.seed=2"],
    "kuairand": ["data=kuairand", f"data.root={SHARED_DATA / 'kuairand'}", "data.files=kuairand_sample.csv",
                 "data.joins=[]", "data.split.kind=ratio", "data.split.column=null"],
}
SAMPLE_DIRS = {"aliccp": "ali-ccp", "aliexpress": "aliexpress", "kuairand": "kuairand"}


def sample_overrides(name: str) -> list[str]:
    """The overrides that train ``data=<name>`` on its shipped sample; skips when it is absent."""
    if not (SHARED_DATA / SAMPLE_DIRS[name]).is_dir():
        pytest.skip(f"the {name} sample is not here ({SHARED_DATA / SAMPLE_DIRS[name]}); see tests/README")
    return list(SAMPLE_OVERRIDES[name])


# Keys of an arch config that name the dataset's tasks (ESMM's roles, AITM's chain).
TASK_ROLE_KEYS = ("ctr", "cvr", "ctcvr", "chain", "conditionals")


def tasks_named_by_arch(arch: str) -> set[str]:
    """The task names ``conf/arch/<arch>.yaml`` requires of a dataset (empty for most)."""
    from omegaconf import OmegaConf

    from mtlrec.train import CONFIG_DIR

    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "arch" / f"{arch}.yaml"))
    named: set[str] = set()
    for key in TASK_ROLE_KEYS:
        value = cfg.get(key)
        if isinstance(value, str):
            named.add(value)
        elif isinstance(value, list):
            named.update(value)
        elif isinstance(value, dict):
            named.update(value)
            named.update(value.values())
    return named


def skip_unless_arch_fits(arch: str, task_names) -> None:
    """Skip (with the reason) an arch whose config names tasks the dataset under test lacks;
    tests/models/test_conversion.py and tests/cli/test_train_conversion.py cover those archs."""
    missing = tasks_named_by_arch(arch) - set(task_names)
    if missing:
        pytest.skip(f"arch={arch} names tasks {sorted(missing)} this dataset lacks (covered on the conversion data)")
