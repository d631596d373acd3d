"""results.json I/O: atomic writes, the config hash, and completeness checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlrec.training import results as results_mod
from mtlrec.training.results import config_hash, is_complete, read_results, write_json_atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_atomic_writes_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.json"  # parents are created
    write_json_atomic(path, {"b": 1, "a": [1.5, None, "x"]})
    text = path.read_text()
    assert json.loads(text) == {"a": [1.5, None, "x"], "b": 1}
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    assert _names(path.parent) == ["results.json"]
    write_json_atomic(path, {"status": "complete"})  # overwrite
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert _names(path.parent) == ["results.json"]


def test_scalars_and_paths_are_serialised(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"t": torch.tensor(0.25), "n": np.float32(0.5), "i": np.int64(3), "p": Path("/x/y")})
    assert json.loads(path.read_text()) == {"t": 0.25, "n": 0.5, "i": 3, "p": "/x/y"}


def test_failing_serialisation_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "complete", "value": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json_atomic(path, {"status": "failed", "value": object()})
    assert path.read_bytes() == before
    assert _names(tmp_path) == ["results.json"]


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"v": 1})

    def boom(*_args, **_kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C between dump and rename

    monkeypatch.setattr(results_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert _names(tmp_path) == ["results.json"]


def test_first_write_failing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "results.json", {"x": {1, 2}})
    assert _names(tmp_path) == []


def test_written_file_has_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "atomic.json", {"a": 1})
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE((tmp_path / p).stat().st_mode)  # noqa: E731
    assert mode("atomic.json") == mode("plain.json") == 0o644


# -- config hash -------------------------------------------------------------------------------
CFG = {"arch": {"_target_": "MMoE", "num_experts": 8}, "seed": 0, "data": {"dim": 100}}


def test_config_hash_ignores_location_keys() -> None:
    h = config_hash(CFG)
    assert len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    assert config_hash({**CFG, "hydra": {"run": {"dir": "/a"}}}) == h
    assert config_hash({**CFG, "paths": {"output_dir": "/b"}, "hydra": {"x": 1}}) == h


def test_config_hash_is_order_independent_and_sensitive() -> None:
    h = config_hash(CFG)
    reordered = {"data": {"dim": 100}, "seed": 0, "arch": {"num_experts": 8, "_target_": "MMoE"}}
    assert config_hash(reordered) == h
    assert config_hash({**CFG, "seed": 1}) != h
    assert config_hash({**CFG, "arch": {"_target_": "MMoE", "num_experts": 4}}) != h
    assert config_hash({**CFG, "output_dir": "/c"}) != h  # only the declared location keys are ignored


def test_read_results_and_is_complete(tmp_path: Path) -> None:
    assert read_results(tmp_path) is None
    (tmp_path / "results.json").write_text('{"status": "compl')  # half-copied
    assert read_results(tmp_path) is None
    assert not is_complete(tmp_path, "abc")
    write_json_atomic(tmp_path / "results.json", {"status": "failed", "config_hash": "abc"})
    assert not is_complete(tmp_path, "abc")
    write_json_atomic(tmp_path / "results.json", {"status": "complete", "config_hash": "abc"})
    assert is_complete(tmp_path, "abc")
    assert not is_complete(tmp_path, "abd")
    assert read_results(tmp_path) == {"status": "complete", "config_hash": "abc"}


def test_an_empty_backbone_group_keeps_the_hash_of_runs_made_before_it_existed() -> None:
    """``backbone: none`` computes what the absence of the group did, so published runs stay
    complete (skipped, not redone); a real backbone changes the hash."""
    h = config_hash(CFG)
    assert config_hash({**CFG, "backbone": {}}) == config_hash({**CFG, "backbone": None}) == h
    assert config_hash({**CFG, "backbone": {"_target_": "VGGBackbone", "freeze": "all"}}) != h
    assert config_hash({**CFG, "data": {"dim": 100, "loader": {"num_workers": 2}}}) == config_hash(
        {**CFG, "data": {"dim": 100, "loader": {}}})



def test_the_grocery_archive_is_skipped_when_its_sweep_is_run_again(tmp_path) -> None:
    """Each archived grocery run's config, composed today from its overrides, has the hash it was
    saved with, so re-running the experiment skips the run instead of redoing it."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from tests.conftest import compose_task_config

    archived = sorted((Path(__file__).resolve().parents[2] / "experiments" / "grocery_multitask").glob(
        "runs*/*/results.json"))
    assert len(archived) == 18
    for path in archived[::5]:
        record = json.loads(path.read_text())
        try:
            cfg = compose_task_config(tmp_path, record["overrides"])
            assert config_hash(OmegaConf.to_container(cfg, resolve=True)) == record["config_hash"], path
        finally:
            HydraConfig.instance().cfg = None
