"""Rendering: Markdown content, LaTeX structure, CSV round trip, and byte-for-byte determinism."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import KNOWN, welch_by_hand

from mtlrec.report.collect import collect
from mtlrec.report.render import latex_escape, to_csv, to_latex, to_markdown
from mtlrec.report.table import build_table

REFERENCE = {"paper mean": {"arch=mmoe": {"test/income/auc": 0.9359}, "arch=shared_bottom": {"income/auc": 0.9285}}}


@pytest.fixture
def table_and_runs(sweep: Path):
    c = collect([sweep])
    return build_table(c, baseline={"arch": "shared_bottom"}, reference=REFERENCE), c


def expected_cell(arch: str, index: int, places: int = 4) -> str:
    values = [v[index] for v in KNOWN[arch].values()]
    return f"{np.mean(values):.{places}f} ± {np.std(values, ddof=1):.{places}f} (3)"


def test_markdown_cells_marks_footnotes_and_excluded_runs(table_and_runs) -> None:
    table, c = table_and_runs
    md = to_markdown(table, c)
    lines = md.splitlines()
    assert lines[0] == ("| arch | income/auc | income/auc wins | income/auc (paper mean) | income/loss | "
                        "income/loss wins | marital/auc | marital/auc wins | samples/s | params |")
    assert lines[1] == "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    mmoe = lines[2].split(" | ")
    assert mmoe[1] == f"**{expected_cell('mmoe', 0)}** †"
    assert mmoe[2] == "3/3"  # MMoE's AUC beats shared-bottom's at each of seeds 0, 1, 2
    assert mmoe[3] == "0.9359"
    assert mmoe[4] == f"**{expected_cell('mmoe', 1)}** †"
    assert mmoe[5] == "3/3"  # ... and its loss is lower at each
    assert mmoe[7] == "3/3"  # marital AUC: 0.99 against 0.98 at every seed
    assert mmoe[-1] == "12,345 |"
    sb = lines[3].split(" | ")
    assert sb[0] == "| shared_bottom" and sb[1] == expected_cell("shared_bottom", 0) and sb[3] == "0.9285"
    assert sb[2] == sb[5] == sb[7] == "(baseline)"
    assert "Wins k/n: this row's run beat the baseline row's run with the same seed at k of the n seeds" in md
    assert "† p < 0.05, Welch's two-sided t-test" in md and "`arch=shared_bottom`" in md
    assert "6 complete run(s) used; 0 duplicate(s) skipped; 2 failed/incomplete run(s) excluded." in md
    assert re.search(r"^- `.*multirun/arch/6` \(`arch=mmoe seed=3`\): failed: CUDA out of memory$", md, re.M)
    assert re.search(r"^- `.*multirun/arch/7` .*no results.json", md, re.M)
    assert len({line.count("|") for line in lines[:4]}) == 1  # same number of columns on every row


def test_latex_is_structurally_valid(table_and_runs) -> None:
    tex = to_latex(table_and_runs[0], title="Census 50%: arch_{x}")
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    unescaped = re.sub(r"\\[{}]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert re.search(r"(?<!\\)_", tex.replace(r"\_", "")) is None  # every underscore escaped
    assert r"\caption{Census 50\%: arch\_\{x\}}" in tex
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 3
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    assert {row.replace(r"\&", "").count("&") for row in rows} == {len(spec) - 1}
    assert r"\textbf{" in rows[1] and r"$^{\dagger}$" in rows[1] and r"shared\_bottom" in rows[2]
    assert r"$\pm$" in rows[1] and "±" not in tex and "†" not in tex


def test_latex_escape() -> None:
    assert latex_escape(r"a_b & 50% #1 $x$ {y} ~ ^ \ ") == (
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{} \textasciicircum{} \textbackslash{} ")


def test_csv_round_trips_with_raw_numbers(table_and_runs) -> None:
    table, _ = table_and_runs
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert list(frame["arch"]) == ["mmoe", "shared_bottom"]
    mmoe_auc = [v[0] for v in KNOWN["mmoe"].values()]
    sb_auc = [v[0] for v in KNOWN["shared_bottom"].values()]
    assert frame.loc[0, "test/income/auc/mean"] == pytest.approx(np.mean(mmoe_auc), abs=1e-15)
    assert frame.loc[0, "test/income/auc/std"] == pytest.approx(np.std(mmoe_auc, ddof=1), rel=1e-12)
    assert list(frame["test/income/auc/n"]) == [3, 3]
    assert list(frame["test/income/auc/best"]) == [True, False]
    assert frame.loc[0, "test/income/auc/p_value"] == pytest.approx(welch_by_hand(mmoe_auc, sb_auc), rel=1e-9)
    assert pd.isna(frame.loc[1, "test/income/auc/p_value"])
    assert list(frame["test/income/auc/ref:paper mean"]) == [0.9359, 0.9285]
    assert list(frame["num_parameters/min"]) == [12345, 6789]
    assert list(frame["baseline"]) == ["arch=shared_bottom"] * 2
    assert frame.loc[0, "test/income/auc/wins"] == 3 and frame.loc[0, "test/income/auc/paired_n"] == 3
    assert frame.loc[0, "test/marital/auc/ties"] == 0 and frame.loc[0, "test/marital/auc/wins"] == 3
    assert frame.loc[[1], ["test/income/auc/wins", "test/income/auc/ties", "test/income/auc/paired_n"]].isna().all(
        axis=None)  # the baseline row is not compared with itself


def test_output_is_deterministic(sweep: Path) -> None:
    def render() -> tuple[str, str, str]:
        c = collect([sweep])
        t = build_table(c, baseline={"arch": "shared_bottom"}, reference=REFERENCE)
        return to_markdown(t, c), to_latex(t, "x"), to_csv(t)

    assert render() == render()
