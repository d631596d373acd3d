"""The one place that turns a composed config into a datamodule, an encoder, an architecture and a
LightningModule. ``mtlrec-train``, :class:`mtlrec.predict.RunScorer`, the benchmark and the tests all
build through here, so a run is scored with exactly the model it trained.

The ``data`` group instantiates a dataset builder (a :class:`~mtlrec.data.raw.RawDataset`); its
``loader`` key holds batch sizes. The ``encoder`` group is a partial taking the fitted
preprocessing; the ``arch`` group a partial taking the fitted schema and the encoder.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from mtlrec.data.datamodule import TabularDataModule
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import Schema
from mtlrec.models.base import Architecture
from mtlrec.models.inputs.encoder import InputEncoder
from mtlrec.training.module import MultiTaskModule
from mtlrec.transfer.parts import freeze

LOADER_OPTIONS = ("batch_size", "eval_batch_size", "num_workers", "on_device", "batches_per_epoch")
OUT_OF_CORE_OPTIONS = ("enabled", "cache_dir", "chunk_rows")


def _instantiate(node, **kwargs):
    """``hydra.utils.instantiate``, but an error raised by the target itself comes out as it was
    raised (Hydra wraps it in an ``InstantiationException`` whose text is the exception's repr, so
    a one-line message about a file or column would reach the user as a multi-line dump)."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig) -> TabularDataModule:
    """In memory, or (``data.out_of_core.enabled``) from a memory-mapped columnar cache that the
    declared files are converted into once (:mod:`mtlrec.data.columnar`)."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    loader = data_cfg.pop("loader", {}) or {}
    unknown = sorted(set(loader) - set(LOADER_OPTIONS))
    if unknown:
        raise ValueError(f"data.loader: unknown option(s) {unknown}; the options are {', '.join(LOADER_OPTIONS)}")
    out_of_core = data_cfg.pop("out_of_core", None) or {}
    unknown = sorted(set(out_of_core) - set(OUT_OF_CORE_OPTIONS))
    if unknown:
        raise ValueError(f"data.out_of_core: unknown option(s) {unknown}; the options are "
                         f"{', '.join(OUT_OF_CORE_OPTIONS)}")
    if out_of_core.get("enabled"):
        datamodule = _columnar_datamodule(data_cfg, out_of_core, cfg.seed, loader)
    else:
        datamodule = TabularDataModule(_instantiate(data_cfg), seed=cfg.seed, **loader)
    datamodule.setup()
    return datamodule


def _columnar_datamodule(data_cfg: dict, options: dict, seed: int, loader: dict) -> TabularDataModule:
    from mtlrec.data.columnar import ColumnarDataModule, convert  # only runs that ask pay for the import

    builder = get_method(data_cfg["_target_"])
    stream = getattr(builder, "stream", None)
    if stream is None:
        raise ValueError(f"data.out_of_core: {data_cfg['_target_']} reads every row at once; only datasets declared "
                         f"on the tabular loader (data=tabular and the configs built on it) convert out of core")
    declaration = {k: v for k, v in data_cfg.items() if k not in ("root", "download")}
    arguments = {k: v for k, v in data_cfg.items() if k != "_target_"}
    dataset = stream(**arguments, chunk_rows=int(options.get("chunk_rows") or 1 << 18))
    folder = convert(dataset, declaration, options.get("cache_dir"))
    return ColumnarDataModule(folder, seed=seed, **loader)


def build_input_encoder(cfg: DictConfig, preprocessor: Preprocessor) -> InputEncoder:
    """The ``backbone`` group (``none`` by default) gives the image backbone, if any."""
    backbone = _instantiate(cfg.backbone) if cfg.get("backbone") else None
    return _instantiate(cfg.encoder)(preprocessor=preprocessor, backbone=backbone)


def build_architecture(cfg: DictConfig, schema: Schema, preprocessor: Preprocessor) -> Architecture:
    """The encoder is built first, then the layers above it: parameters are drawn in network order."""
    encoder = build_input_encoder(cfg, preprocessor)
    return _instantiate(cfg.arch)(schema=schema, encoder=encoder)


def build_module(cfg: DictConfig, datamodule: TabularDataModule) -> MultiTaskModule:
    """Also tells the datamodule what its workers must do to a batch first (read pixels for an
    image backbone that trains), as the encoder asks."""
    schema = datamodule.schema
    architecture = build_architecture(cfg, schema, datamodule.preprocessor)
    finetune = OmegaConf.to_container(cfg.finetune, resolve=True) if cfg.get("finetune") else {}
    unknown = sorted(set(finetune) - {"freeze", "lr", "l2sp"})
    if unknown:
        raise ValueError(f"finetune: unknown option(s) {unknown}; the options are freeze, lr, l2sp")
    freeze(architecture, finetune.get("freeze") or [])  # before the weighting sees the shared parameters
    transforms, training = {}, {}
    for module in architecture.modules():
        if isinstance(module, InputEncoder):
            transforms.update(module.batch_transforms())
            training.update(module.batch_transforms(training=True))
    datamodule.set_batch_transforms(transforms, training)
    return MultiTaskModule(
        schema,
        architecture,
        weighting=_instantiate(cfg.weighting),
        optimizer=instantiate(cfg.optimizer),
        labelled_counts=datamodule.labelled_counts(),
        part_lr=finetune.get("lr") or {},
        adaptation=build_adaptation(cfg, datamodule, architecture),
        conflict_every=_insight_options(cfg)["conflict_every"],
        compile_model=bool(cfg.get("compile", False)),
    )


def _insight_options(cfg: DictConfig) -> dict:
    """The ``insight`` options (what a run measures about itself; nothing it trains)."""
    options = {"conflict_every": 0, **(OmegaConf.to_container(cfg.insight, resolve=True) if cfg.get("insight") else {})}
    unknown = sorted(set(options) - {"conflict_every"})
    if unknown:
        raise ValueError(f"insight: unknown option(s) {unknown}; the options are conflict_every")
    return options


def build_adaptation(cfg: DictConfig, datamodule: TabularDataModule, architecture: Architecture):
    """The ``adapt`` group (none by default): a domain-adaptation loss, which needs training rows
    of both domains (``data.domain.rows=both``) and a representation every task shares."""
    if not cfg.get("adapt"):
        return None
    train = datamodule.tables["train"]
    domain = getattr(train, "domain", None)
    if domain is None or not (domain.min() == 0 and domain.max() == 1):
        raise ValueError("adapt: domain adaptation needs training rows of both domains; declare data.domain (column, "
                         "target) with data.domain.rows=both")
    if architecture.task_networks() is not None:
        raise ValueError("adapt: this architecture gives each task its own network, so there is no shared "
                         "representation to adapt; choose one that shares, e.g. arch=shared_bottom or arch=mmoe")
    return _instantiate(cfg.adapt)(feature_dim=architecture.shared_width())
