"""Optional extras never break the README's test command: without them the suite collects, and the
tests that need them skip with the reason (regression: ``find_spec("hydra_plugins.x")`` raised at
import when the sweep extra was absent, so ``pytest`` stopped at collection on a fresh machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mtlrec.extras import EXTRAS, missing_modules, module_available

REPO = Path(__file__).resolve().parents[2]

# Runs pytest with the sweep extra's parent package made unimportable, as on a fresh machine.
_HIDE_AND_COLLECT = """
import sys
sys.modules["hydra_plugins"] = None  # import of hydra_plugins (and anything under it) now fails
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests", "-rs"]))
"""


def test_missing_parent_package_is_reported_not_raised(monkeypatch) -> None:
    for name in [m for m in sys.modules if m.startswith("hydra_plugins.")]:  # imported by earlier tests
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "hydra_plugins", None)
    assert module_available("hydra_plugins.hydra_optuna_sweeper") is False
    assert missing_modules("sweep") == list(EXTRAS["sweep"])
    assert module_available("torch") is True


def test_suite_collects_without_the_sweep_extra() -> None:
    proc = subprocess.run([sys.executable, "-c", _HIDE_AND_COLLECT], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower()
    assert "tests/cli/test_configs.py::test_optuna_search_config_composes" in proc.stdout


def test_sweep_tests_skip_with_the_reason_without_the_extra(tmp_path) -> None:
    script = _HIDE_AND_COLLECT.replace('"--collect-only", ', "").replace(
        '"tests"', '"tests/cli/test_configs.py", "-k", "optuna or launcher"')
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "needs the 'sweep' extra" in proc.stdout and 'pip install -e ".[sweep]"' in proc.stdout
    assert " passed" not in proc.stdout.splitlines()[-1]  # all of them skipped


@pytest.mark.sweep
def test_sweep_extra_is_complete_when_installed() -> None:
    assert missing_modules("sweep") == []
