"""What a person sees: progress bar only where someone watches, logger configs that either work or
say which extra to install, and no dependency noise in the CLI's output."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mtlrec import train
from mtlrec.extras import missing_logger_extra
from mtlrec.training.console import progress_bar_wanted
from tests.conftest import compose_task_config

LOGGERS = sorted(p.stem for p in (Path(train.CONFIG_DIR) / "logger").glob("*.yaml"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("tty", "ci", "multirun", "expected"),
    [(True, None, False, True), (False, None, False, False), (True, "true", False, False), (True, None, True, False)],
)
def test_progress_bar_auto(monkeypatch, tty, ci, multirun, expected) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal() if tty else io.StringIO())
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert progress_bar_wanted("auto", multirun) is expected


def test_progress_bar_explicit_and_invalid() -> None:
    assert progress_bar_wanted(True, True) is True and progress_bar_wanted(False, False) is False
    with pytest.raises(ValueError, match="console.progress_bar='sometimes': use auto, true or false"):
        progress_bar_wanted("sometimes", False)


def test_logger_configs_cover_the_trackers_users_expect() -> None:
    assert {"csv", "tensorboard", "mlflow", "wandb", "none"} <= set(LOGGERS)


@pytest.mark.parametrize("logger", LOGGERS)
def test_logger_builds_or_names_the_extra_to_install(logger, tmp_path, monkeypatch) -> None:
    """Every shipped logger config: a real Lightning logger when its package is installed, else one
    clear error naming the extra (raised before the run folder is written)."""
    monkeypatch.chdir(tmp_path)  # MLflow's default store is ./mlruns
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_task_config(tmp_path, [f"logger={logger}"])
    try:
        node = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None
        extra = missing_logger_extra(str((node or {}).get("_target_", "")))
        if extra:
            with pytest.raises(ModuleNotFoundError, match=rf'logger={extra} needs the .* pip install -e "\.\[{extra}\]"'):
                train.build_logger(cfg)
        else:
            built = train.build_logger(cfg)
            assert built is False if logger == "none" else type(built).__name__ == node["_target_"].rsplit(".", 1)[-1]
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.tensorboard
def test_tensorboard_logger_writes_events(tmp_path) -> None:
    from tests.training.orchestration_setup import fit

    fit(tmp_path, "logger=tensorboard", "trainer.max_epochs=2")
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_quiet_hides_dependency_deprecations_but_not_mtlrecs(monkeypatch) -> None:
    import warnings

    from mtlrec.training.console import quiet_third_party

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        for module in ("lightning.pytorch.x", "torch.utils", "mtlrec.models.x", "__main__"):
            warnings.warn_explicit(f"old api in {module}", DeprecationWarning, "f.py", 1, module=module)
        warnings.warn_explicit("`weights_only` was not set", UserWarning, "f.py", 1, module="lightning.x")
        warnings.warn_explicit("loss is nan", RuntimeWarning, "f.py", 1, module="torch.x")
    shown = sorted(str(w.message) for w in seen)
    assert shown == ["loss is nan", "old api in __main__", "old api in mtlrec.models.x"]
