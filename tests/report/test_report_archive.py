"""The archive keeps complete runs only, without machine paths, and feeds the same table."""

from __future__ import annotations

import json

from report_fixtures import make_result, write_run

from mtlrec.report.archive import archive, main
from mtlrec.report.cli import main as report_main


def test_archive_copies_complete_runs_without_locations(tmp_path, capsys) -> None:
    good = make_result("mmoe", 0, income_auc=0.9, income_loss=0.2, val_auc=0.9)
    good["config"] = {"data": {"root": "/machine/path", "group": 1}, "hydra": {"x": 1}, "seed": 0}
    good["overrides"] = ["arch=mmoe", "seed=0", "data.root=/machine/path"]
    write_run(tmp_path / "sweep" / "arch=mmoe,seed=0", good)
    write_run(tmp_path / "sweep" / "arch=shared_bottom,seed=0",
              make_result("shared_bottom", 0, income_auc=0.9, income_loss=0.2, val_auc=0.9, status="failed"))
    copied, skipped = archive([tmp_path / "sweep"], tmp_path / "runs")
    assert copied == 1 and len(skipped) == 1 and "failed" in skipped[0]
    saved = json.loads((tmp_path / "runs" / "arch=mmoe,seed=0" / "results.json").read_text())
    assert saved["config"] == {"data": {"group": 1}, "seed": 0}
    assert saved["overrides"] == ["arch=mmoe", "seed=0"]
    assert "/machine/path" not in (tmp_path / "runs" / "arch=mmoe,seed=0" / "results.json").read_text()
    # the archive reports like the sweep it came from
    assert report_main([str(tmp_path / "runs"), "--rows", "arch"]) == 0
    assert "mmoe" in capsys.readouterr().out


def test_archive_of_nothing_is_an_error_and_keeps_the_old_archive(tmp_path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("old")
    assert main([str(tmp_path / "empty"), str(tmp_path / "runs")]) == 2
    assert (tmp_path / "runs" / "keep.txt").read_text() == "old"
