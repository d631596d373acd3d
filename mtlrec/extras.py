"""Optional extras: which packages each one brings, and a clear message when one is missing.

``importlib.util.find_spec("a.b")`` *raises* ``ModuleNotFoundError`` when the parent package ``a``
is absent (e.g. ``hydra_plugins`` without the ``sweep`` extra) instead of returning ``None``, so
"is it installed?" goes through :func:`module_available`.
"""

from __future__ import annotations

import importlib.util

#: extra (as in ``pip install -e ".[extra]"``) -> the modules that must be importable for it
EXTRAS: dict[str, tuple[str, ...]] = {
    "sweep": (
        "hydra_plugins.hydra_joblib_launcher",
        "hydra_plugins.hydra_submitit_launcher",
        "hydra_plugins.hydra_optuna_sweeper",
    ),
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}

#: Lightning logger class name -> the extra that provides its package
LOGGER_EXTRAS: dict[str, str] = {"TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow", "WandbLogger": "wandb"}
#: extra -> modules that serve its logger as well (Lightning's TensorBoardLogger accepts tensorboardX)
LOGGER_ALTERNATIVES: dict[str, tuple[str, ...]] = {"tensorboard": ("tensorboardX",)}


def module_available(name: str) -> bool:
    """True when ``name`` can be imported; False when it or a parent package is missing."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):  # missing parent package; a module with __spec__ None
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported (empty when the extra is installed)."""
    return [m for m in EXTRAS[extra] if not module_available(m)]


def install_hint(extra: str) -> str:
    return f'pip install -e ".[{extra}]"  (or: pip install "mtlrec[{extra}]")'


def missing_logger_extra(target: str) -> str | None:
    """The extra a Lightning logger class (``_target_``) needs when its package is not installed,
    else ``None`` (also for loggers that need no extra)."""
    extra = LOGGER_EXTRAS.get(target.rsplit(".", 1)[-1])
    if extra is None or not missing_modules(extra):
        return None
    return None if any(module_available(m) for m in LOGGER_ALTERNATIVES.get(extra, ())) else extra
