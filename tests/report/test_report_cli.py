"""The ``mtlrec-report`` command: exit codes, stdout, written files, errors that name the problem."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_result, write_run

from mtlrec.report.cli import main


def test_empty_path_is_one_clear_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing-here"
    assert main([str(tmp_path), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [f"mtlrec-report: error: no runs found under {tmp_path}, {missing} "
                                        "(looked for results.json files and Hydra job folders with .hydra/)"]


def test_only_failed_runs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "0", make_result("mmoe", 0, income_auc=0.9, income_loss=0.3, val_auc=0.9, status="failed"))
    assert main([str(tmp_path)]) == 2
    assert "no complete runs" in capsys.readouterr().err


def test_full_report(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "paper.yaml"
    ref.write_text('columns:\n  "paper mean":\n    "arch=mmoe":\n      "test/income/auc": 0.9359\n')
    out = tmp_path / "report"
    md_file = tmp_path / "RESULTS.md"
    argv = [str(sweep), "--out", str(out), "--baseline", "arch=shared_bottom", "--reference", str(ref),
            "--plot-x", "arch", "--plot-metric", "income/loss", "--weights-plot", "--title", "Census arch",
            "--markdown-file", str(md_file)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("| arch | income/auc | income/auc wins | income/auc (paper mean) |")
    assert sorted(p.name for p in out.iterdir()) == [
        "results.csv", "results.md", "results.tex", "test_income_loss_vs_arch.pdf", "test_income_loss_vs_arch.png",
        "weights.pdf", "weights.png"]
    document = md_file.read_text()
    assert document.startswith("# Census arch\n")
    assert "mtlrec-report " + " ".join(argv[:5]) in document  # the exact command, to regenerate
    assert document.endswith(stdout)
    assert (out / "results.md").read_text() == document
    assert pd.read_csv(out / "results.csv")["test/income/auc/ref:paper mean"].iloc[0] == 0.9359

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".md", ".tex", ".csv")}
    assert main(argv) == 0
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".md", ".tex", ".csv")}


def test_format_and_split_options(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(sweep), "--out", str(tmp_path / "o"), "--format", "csv", "--split", "val",
                 "--metrics", "*/auc", "--rows", "arch"]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["results.csv"]
    frame = pd.read_csv(io.StringIO((tmp_path / "o" / "results.csv").read_text()))
    assert [c for c in frame.columns if c.endswith("/mean")] == [
        "val/income/auc/mean", "val/marital/auc/mean", "train_samples_per_second/mean"]
    assert "val split" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--rows", "lr"], "unknown row key"), (["--baseline", "arch=ple"], "matches no row"),
     (["--out", "X", "--plot-x", "arch", "--plot-metric", "income/ndcg"],
      "--plot-metric 'test/income/ndcg' not found")],
)
def test_bad_requests_exit_2(sweep: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path) -> None:
    extra = [str(tmp_path / "x") if e == "X" else e for e in extra]
    assert main([str(sweep), *extra]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert not (tmp_path / "x").exists()  # nothing written for a request that fails


def test_usage_errors(sweep: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(sweep), "--weights-plot"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([str(sweep), "--plot-x", "arch", "--out", "o"])


def test_duplicates_reported(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(sweep / "0", tmp_path / "again" / "0")
    assert main([str(sweep), str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert "6 complete run(s) used; 1 duplicate(s) skipped" in out
    assert "again/0` duplicates" in out


def test_console_script_declared() -> None:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'mtlrec-report = "mtlrec.report.cli:main"' in text


def test_notes_are_appended_to_the_markdown_document(tmp_path) -> None:
    report_main = main
    write_run(tmp_path / "runs" / "a", make_result("mmoe", 0, income_auc=0.9, income_loss=0.2, val_auc=0.9))
    notes = tmp_path / "NOTES.md"
    notes.write_text("## Discussion\n\nOurs differ because of X.\n")
    out = tmp_path / "RESULTS.md"
    assert report_main([str(tmp_path / "runs"), "--markdown-file", str(out), "--notes", str(notes)]) == 0
    text = out.read_text()
    assert text.endswith("\n## Discussion\n\nOurs differ because of X.\n")
    assert text.index("income/auc") < text.index("## Discussion")
    assert report_main([str(tmp_path / "runs"), "--notes", str(tmp_path / "missing.md")]) == 2
