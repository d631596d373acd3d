"""``experiments/census_mmoe_table/compare_fast.py``: the committed comparison of the float32 table
with its fast form (bf16-mixed + compile) is what the script makes of the two committed archives,
and the script finds no difference between an archive and itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "experiments" / "census_mmoe_table"
SCRIPT = FOLDER / "compare_fast.py"


def _compare(reference: Path, fast: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(reference), str(fast)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _rows(text: str) -> list[list[str]]:
    return [line.split(" | ") for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |"))]


def test_committed_comparison_is_what_the_script_makes_of_the_archives() -> None:
    text = _compare(FOLDER / "runs", FOLDER / "fast" / "runs")
    assert text in (FOLDER / "fast" / "COMPARISON.md").read_text()
    rows = _rows(text)
    assert len(rows) == 2 * 7 * 2  # groups × architectures × tasks
    assert all("(10)" in row[3] and "(10)" in row[4] for row in rows)  # every seed of both forms


def test_an_archive_against_itself_differs_nowhere() -> None:
    rows = _rows(_compare(FOLDER / "runs", FOLDER / "runs"))
    assert len(rows) == 28 and {row[5] for row in rows} == {"+0.0000"}
