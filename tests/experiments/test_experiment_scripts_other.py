"""The other half of the experiment scripts' smoke runs (see test_experiment_scripts.py), in a
module of its own so that pytest-xdist's ``--dist loadfile`` runs the two halves on two workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.experiments.test_experiment_scripts import SCRIPTS, check_script_runs


@pytest.mark.parametrize("script", SCRIPTS[1::2])
def test_experiment_script_runs(script: str, tmp_path: Path) -> None:
    check_script_runs(script, tmp_path)


def test_the_two_halves_cover_every_script() -> None:
    assert sorted(SCRIPTS[::2] + SCRIPTS[1::2]) == SCRIPTS
