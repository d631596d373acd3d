"""Every experiment script runs at HEAD: a few steps of each, into a temporary folder, through the
same entry point the committed results came from (so a recipe cannot silently rot).

Scripts are discovered from ``experiments/*/run.*``; one without a smoke recipe here fails. Half
of them run here, half in test_experiment_scripts_other.py, so that ``--dist loadfile`` can give
the two halves to two workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CENSUS_FIXTURE = REPO / "tests" / "fixtures" / "census"
WOMENS_FIXTURE = REPO / "tests" / "fixtures" / "womens_reviews"  # synthetic rows in the real file's format
GROCERY_FIXTURE = REPO / "tests" / "fixtures" / "grocery"  # 48 real photos at 32x32
SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("experiments/*/run.*"))

# script -> (arguments, tiny Hydra overrides or script options); run.sh scripts get LAUNCHER=basic
SMOKE: dict[str, list[str]] = {
    "experiments/census_mmoe_table/run.sh": [
        # the stacked form of the recipe (seeds=K, as on a GPU): two stacked jobs of 2 seeds
        str(CENSUS_FIXTURE), "arch=single_task,shared_bottom", "data.group=1", "hydra.sweeper.params.seed=0", "seeds=2",
        "trainer.max_epochs=2",
        "data.loader.batch_size=128",
    ],
    "experiments/synthetic_correlation/run.sh": [
        "arch=shared_bottom,mmoe", "data.correlation=0.5", "seed=0", "data.num_train=400", "data.num_val=100",
        "data.num_test=100", "trainer.max_epochs=1",
    ],
    "experiments/womens_reviews/run.sh": [
        str(WOMENS_FIXTURE), "arch=shared_bottom,mmoe", "seed=0", "trainer.max_epochs=2",
    ],
    "experiments/grocery_multitask/run.sh": [
        str(GROCERY_FIXTURE), "arch=single_task,mmoe", "seed=0", "trainer.max_epochs=2", "backbone.input_size=32",
    ],
    "experiments/census_insight/run.sh": [
        str(CENSUS_FIXTURE), "arch=single_task,shared_bottom,mmoe,ple", "seed=0,1", "trainer.max_epochs=1",
        "data.loader.batch_size=128", "insight.conflict_every=2",
    ],
    "experiments/retail_transfer/run.sh": [str(WOMENS_FIXTURE), "data.domain.labelled=10", "trainer.max_epochs=1"],
    "experiments/grocery_transfer/run.sh": [str(GROCERY_FIXTURE), "backbone.input_size=32", "trainer.max_epochs=1",
                                           "data.loader.batches_per_epoch=2"],
    "experiments/gradnorm_toy/run.py": [
        "--seeds", "2", "--steps", "20", "--eval-every", "10", "--n-train", "200", "--n-test", "100",
        "--workers", "1", "--reference-seeds", "1",
    ],
}


# the script's own size knobs, where it loops itself instead of sweeping
SMOKE_ENV: dict[str, dict[str, str]] = {
    "experiments/retail_transfer/run.sh": {"SEEDS": "0", "ARCHS": "shared_bottom", "SOURCES": "Tops",
                                           "TARGET_EPOCHS": "1"},
    # four of the six arms: last_block and full take the paths frozen and full_l2sp take
    "experiments/grocery_transfer/run.sh": {"SEEDS": "0", "SHOTS": "1", "ARMS": "scratch frozen full_l2sp full_augment"},
    "experiments/census_insight/run.sh": {"EXPLAIN_ARGS": "--max-rows 300 --repeats 1", "FUSE_SEEDS": "0 1"},
}
# archived runs a smoke run leaves: glob under OUT -> how many
ARCHIVED = {
    # each (group, arch) job trains its seeds stacked (seeds=K); the archive keeps <job>/seed=<s>/
    "experiments/census_mmoe_table/run.sh": {"runs/*/seed=*/results.json": 4},
    "experiments/retail_transfer/run.sh": {"runs/source/*/results.json": 2, "runs/target/*/results.json": 7},
    "experiments/grocery_transfer/run.sh": {"runs/source/*/results.json": 1, "runs/target/*/results.json": 4},
    "experiments/census_insight/run.sh": {"runs/*/results.json": 8, "fusion/*/fusion.md": 4,
                                          "explain/gates_*.png": 2, "explain/runs/gates_*.png": 4,
                                          "explain/conflict_*.png": 3, "explain/importance_*.png": 12},
}


def test_every_experiment_script_has_a_smoke_recipe() -> None:
    assert SCRIPTS, "no experiment scripts found"
    assert sorted(SMOKE) == SCRIPTS


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SWEEP_DIR": str(tmp_path / "sweep"), "OUT": str(tmp_path / "out"), "LAUNCHER": "basic",
           "MTLREC_CACHE_DIR": str(tmp_path / "cache"), **SMOKE_ENV.get(script, {})}
    if script.endswith(".py"):
        cmd = [sys.executable, script, *SMOKE[script], "--out", str(tmp_path / "out")]
    else:
        cmd = ["bash", script, *SMOKE[script]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _committed_state(script: str) -> dict[str, bytes]:
    folder = REPO / Path(script).parent
    return {str(p.relative_to(REPO)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# a row of each generated table that the smoke run must produce
EXPECTED_ROW = {"experiments/census_mmoe_table/run.sh": "| 1 | shared_bottom |",
                "experiments/womens_reviews/run.sh": "| mmoe |",
                "experiments/grocery_multitask/run.sh": "| mmoe |",
                "experiments/synthetic_correlation/run.sh": "| 0.5 | mmoe |",
                "experiments/retail_transfer/run.sh": "| shared_bottom | joint_dann |",
                "experiments/grocery_transfer/run.sh": "| 1 | full_l2sp |",
                "experiments/census_insight/run.sh": "| mmoe |"}


@pytest.mark.parametrize("script", SCRIPTS[::2])  # the other half: test_experiment_scripts_other.py
def test_experiment_script_runs(script: str, tmp_path: Path) -> None:
    check_script_runs(script, tmp_path)


def check_script_runs(script: str, tmp_path: Path) -> None:
    before = _committed_state(script)
    default_sweep = REPO / "multirun" / Path(script).parent.name
    sweep_existed = default_sweep.exists()
    proc = _run(script, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    results = (out / "RESULTS.md").read_text()
    if script.endswith(".py"):
        data = json.loads((out / "results.json").read_text())
        assert f"commit `{data['config']['git_commit']}`" in results
        if (REPO / ".git").exists():
            assert data["config"]["git_commit"]
        assert {r["method"] for r in data["runs"]} == {"equal", "uncertainty", "gradnorm"}
        assert all(r["finite"] for r in data["runs"])
    else:
        expected = ARCHIVED.get(script, {"runs/*/results.json": 2})
        archived = sorted(path for pattern in expected if pattern.endswith("results.json") for path in out.glob(pattern))
        assert {pattern: len(list(out.glob(pattern))) for pattern in expected} == expected
        for path in archived:
            record = json.loads(path.read_text())
            assert record["status"] == "complete"
            assert len(record["train_loss_per_epoch"]) == record["epochs_trained"]
        assert EXPECTED_ROW[script] in results
        if script == "experiments/grocery_multitask/run.sh":  # the fine-tuning sweep: both freeze policies
            finetune = (out / "FINETUNE.md").read_text()
            assert "| 1 |" in finetune and "| all |" in finetune
        if script == "experiments/retail_transfer/run.sh":  # the probe's table and the measured gains
            probe = (out / "PROBE.md").read_text()
            assert "| Tops |" in probe and "Spearman" in probe
        if script == "experiments/census_insight/run.sh":  # every generated part made it into RESULTS.md
            for part in ("MMoE: gate utilisation", "PLE: task-gradient conflict",
                         "SharedBottom: permutation importance", "### Task relations", "Gain over single-task",
                         "### sb_mmoe_ple_seed1", "### mmoe_2_seeds", "| stacking |"):
                assert part in results, part
            # ranks are no probabilities: no log loss for rank averaging
            rank_row = next(line for line in results.splitlines() if line.startswith("| rank | fusion |"))
            assert rank_row.count("| – |") >= 1 and "| vote | fusion |" in results
        if script == "experiments/grocery_transfer/run.sh":  # the source's backbone reached the target arms
            source = json.loads(next(out.glob("runs/source/*/results.json")).read_text())
            assert source["backbone_file"] == "backbone.pth"
            frozen = json.loads(next(out.glob("runs/target/*frozen/results.json")).read_text())
            assert frozen["config"]["backbone"]["weights_path"].endswith("backbone.pth")
    # the committed results of the experiment, and its default sweep folder, are untouched
    assert _committed_state(script) == before
    assert default_sweep.exists() == sweep_existed
