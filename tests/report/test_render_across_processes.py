"""The committed ``RESULTS.md`` of the synthetic-correlation experiment regenerates byte for byte
from its committed archive, in fresh processes.

The experiment's README says ``RESULTS.md`` and ``report/`` are generated from ``runs/`` by the
``mtlrec-report`` command at the top of ``RESULTS.md`` and never edited by hand. In-process tests
cannot see what varies between interpreters: set and dict-of-set iteration order follows
``PYTHONHASHSEED``, so a table whose row order, footnotes or tie-breaks depend on it would differ
from run to run. Here the command of ``run.sh`` runs twice, in two subprocesses with different hash
seeds, each in its own scratch copy of the experiment folder (so the relative paths, which appear
in the generated command line, are those of ``run.sh``), and the text outputs are compared.
Plots (PNG/PDF) carry creation metadata and are not compared.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = Path("experiments/synthetic_correlation")  # relative to the repo root, as in run.sh
TEXT_OUTPUTS = ("RESULTS.md", "report/results.md", "report/results.csv", "report/results.tex")


def run_sh_report_argv() -> list[str]:
    """The ``mtlrec-report`` arguments of ``run.sh``, with ``$out``/``$here`` = the experiment folder
    (run.sh's defaults, with the working directory at the repo root as run.sh ``cd``s there)."""
    script = (REPO / EXPERIMENT / "run.sh").read_text().replace("\\\n", " ")
    # run.sh's defaults (from experiments/paths.sh) must be repo-relative: they are written into the
    # published RESULTS.md
    assert f'\nexperiment_paths {EXPERIMENT.name} "$here"\n' in script, "run.sh should set its paths with paths.sh"
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_DIR", "OUT")}
    shown = subprocess.run(
        ["bash", "-c", f'source experiments/paths.sh && experiment_paths {EXPERIMENT.name} "{REPO / EXPERIMENT}" '
                       f'&& echo "$out $rel"'],
        cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert shown == [str(EXPERIMENT)] * 2, f"out and rel should default to {EXPERIMENT}, got {shown}"
    lines = [line for line in script.splitlines() if line.lstrip().startswith("mtlrec-report ")]
    assert len(lines) == 1, "run.sh should call mtlrec-report exactly once"
    line = lines[0].replace("$out", str(EXPERIMENT)).replace("$rel", str(EXPERIMENT))
    assert "$" not in line, f"unexpanded variable in {line!r}"
    argv = shlex.split(line)
    assert argv[0] == "mtlrec-report"
    return argv[1:]


def _workspace(root: Path) -> Path:
    """A scratch repo-like folder holding a copy of the archive and the notes, nothing else."""
    exp = root / EXPERIMENT
    exp.mkdir(parents=True)
    shutil.copytree(REPO / EXPERIMENT / "runs", exp / "runs")
    shutil.copy2(REPO / EXPERIMENT / "NOTES.md", exp / "NOTES.md")
    return root


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> dict[str, dict]:
    """Two runs of the report CLI, one after the other, with PYTHONHASHSEED 1 and 2."""
    argv = run_sh_report_argv()
    procs = {}
    for hash_seed in ("1", "2"):
        ws = _workspace(tmp_path_factory.mktemp(f"hashseed{hash_seed}"))
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "MPLBACKEND": "Agg"}
        procs[hash_seed] = (ws, subprocess.run([sys.executable, "-m", "mtlrec.report.cli", *argv], cwd=ws, env=env,
                                               capture_output=True, timeout=600))
    out = {}
    for hash_seed, (ws, proc) in procs.items():
        stdout, stderr = proc.stdout, proc.stderr
        assert proc.returncode == 0, stderr.decode()
        files = {name: (ws / EXPERIMENT / name).read_bytes() for name in TEXT_OUTPUTS}
        out[hash_seed] = {"stdout": stdout, "stderr": stderr.decode(), "files": files}
    return out


def test_run_sh_arguments_are_the_ones_recorded_in_results_md() -> None:
    """The command written at the top of the committed RESULTS.md is run.sh's command."""
    committed = (REPO / EXPERIMENT / "RESULTS.md").read_text()
    block = re.search(r"```\n(mtlrec-report .*)\n```", committed)
    assert block, "RESULTS.md does not record its command"
    assert shlex.split(block.group(1))[1:] == run_sh_report_argv()


def test_text_outputs_identical_across_processes_and_hash_seeds(regenerated) -> None:
    a, b = regenerated["1"], regenerated["2"]
    for name in TEXT_OUTPUTS:
        assert a["files"][name], f"{name} is empty"
        assert a["files"][name] == b["files"][name], f"{name} differs between PYTHONHASHSEED=1 and 2"
    assert a["stdout"] == b["stdout"]
    assert a["stdout"].decode() in a["files"]["RESULTS.md"].decode()  # stdout is the document's table
    assert "warning" not in a["stderr"], a["stderr"]


@pytest.mark.parametrize("name", TEXT_OUTPUTS)
def test_regenerated_outputs_equal_the_committed_ones(regenerated, name) -> None:
    """RESULTS.md (and report/'s text files) as committed are exactly what the archive gives."""
    committed = (REPO / EXPERIMENT / name).read_bytes()
    got = regenerated["1"]["files"][name]
    if got != committed:
        diff = [
            f"-{c}\n+{g}" for c, g in zip(committed.decode().splitlines(), got.decode().splitlines()) if c != g
        ]
        pytest.fail(f"{name}: regenerated differs from committed; first differing lines:\n" + "\n".join(diff[:5]))
    # the markdown in --out is the same document as the committed RESULTS.md
    if name == "report/results.md":
        assert got == (REPO / EXPERIMENT / "RESULTS.md").read_bytes()
