"""Bad config options stop ``mtlrec-train`` in one line that names the option and the fix; the exit
status is non-zero and no results.json is written. The cases run ``mtlrec.train.cli`` (the console
script's function) in this process, on the embedded synthetic data: the data-side cases, which need
files, run as subprocesses in test_bad_input.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

FAST = ["data.num_train=400", "data.num_val=200", "data.num_test=200", "trainer.max_epochs=1"]

# case -> (overrides, what the one line must contain)
CASES = {
    "unknown arch": (["arch=mmo"], ["arch=mmo", "did you mean 'mmoe'", "shared_bottom", "--config-dir"]),
    "unknown weighting": (["weighting=gradnrom"], ["weighting=gradnrom", "did you mean 'gradnorm'", "uncertainty"]),
    "unknown data": (["data=census"], ["data=census", "census_income", "synthetic"]),
    "unknown backbone": (["backbone=vgg19"], ["backbone=vgg19", "vgg16"]),
    "typo'd key": (["arch.num_expert=4"], ["arch.num_expert", "did you mean 'num_experts'", "expert_units",
                                           "+arch.num_expert=4"]),
    "typo'd key added with +": (["+arch.num_expert=4"], ["arch.num_expert", "MMoE has no option 'num_expert'",
                                                         "did you mean 'num_experts'"]),
    "typo'd key in a sweep": (["-m", "arch=mmoe,ple", "arch.num_expert=4,8"], ["arch.num_expert",
                                                                            "did you mean 'num_experts'"]),
    "typo'd weighting key": (["weighting=gradnorm", "+weighting.alfa=1"], ["weighting.alfa", "did you mean 'alpha'"]),
    "zero experts": (["arch.num_experts=0"], ["arch.num_experts=0", "positive whole number"]),
    "negative units": (["arch.expert_units=[16,-4]"], ["arch.expert_units=[16, -4]", "positive whole number"]),
    "zero batch size": (["data.loader.batch_size=0"], ["data.loader.batch_size=0", "positive whole number"]),
    "negative epochs": (["trainer.max_epochs=-2"], ["trainer.max_epochs=-2", "positive whole number"]),
    "zero embedding width": (["encoder.embedding_dim=0"], ["encoder.embedding_dim=0", "positive"]),
    "learning rate 0": (["optimizer.lr=0"], ["optimizer.lr=0", "above 0"]),
    "negative weighting learning rate": (["weighting=uncertainty", "weighting.lr=-0.1"],
                                         ["weighting.lr=-0.1", "above 0"]),
    "aggregation on the representation, two processes": (
        ["weighting=upgrad", "weighting.level=representation", "trainer=ddp", "trainer.accelerator=cpu"],
        ["weighting.level=representation", "2 processes", "weighting.level=parameters"]),
    "bad console option": (["console.progress_bar=none"], ["console.progress_bar='none'", "auto, true or false"]),
    "an accelerator this machine lacks": (["trainer.accelerator=tpu"], ["mtlrec-train: error: trainer: ", "torch_xla"]),
}


def _cli(monkeypatch, capfd, run_dir, *overrides: str) -> tuple[int | str | None, str]:
    from mtlrec import train

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    location = f"hydra.sweep.dir={run_dir}" if "-m" in overrides else f"hydra.run.dir={run_dir}"
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    monkeypatch.setattr(sys, "argv", ["mtlrec-train", *flags, *FAST, *rest, location])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            train.cli()
    finally:
        GlobalHydra.instance().clear()
    return stopped.value.code, capfd.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_option_gives_one_line_and_no_results(case, tmp_path, monkeypatch, capfd) -> None:
    overrides, expected = CASES[case]
    code, err = _cli(monkeypatch, capfd, tmp_path / "run", *overrides)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), err[-3000:]
    assert len(lines) == 1, err[-4000:]
    assert lines[0].startswith("mtlrec-train: error: ")
    missing = [e for e in expected if e not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert not list(tmp_path.rglob("results.json"))


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capfd) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = _cli(monkeypatch, capfd, blocker / "run")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert "hydra.run.dir" in lines[0] and str(blocker) in lines[0] and "not a folder" in lines[0]


def test_a_valid_sweep_and_help_pass_the_check() -> None:
    from mtlrec.options import check_command_line
    from mtlrec.train import CONFIG_DIR

    check_command_line(["-m", "arch=mmoe,ple", "seed=range(2)", "optimizer.lr=interval(0.0001,0.01)"], CONFIG_DIR)
    check_command_line(["--help"], CONFIG_DIR)
    check_command_line(["+arch.extra_option=1"], CONFIG_DIR)  # composes: a constructor check stops it later


def test_a_report_on_results_of_an_unknown_format_is_one_line(tmp_path, capsys) -> None:
    import json

    from mtlrec.report.cli import main as report_main

    run = tmp_path / "sweep" / "seed=0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"format": 99, "status": "complete", "metrics": {}}))
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtlrec-report: error: "), lines
    assert "seed=0" in lines[0] and "unsupported results format 99" in lines[0]
    assert not (tmp_path / "report").exists()


WEIGHTINGS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "weighting").glob("*.yaml"))


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_weightings_that_set_gradients_refuse_fp16(name) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from mtlrec.train import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        weighting = instantiate(compose("config", overrides=[f"weighting={name}"]).weighting)
    weighting.check_trainer("bf16-mixed", 1)  # no loss scaling: every scheme is right
    weighting.check_trainer("32-true", 1)
    if name in ("gradnorm", "cagrad", "mgda", "nashmtl", "pcgrad", "upgrad"):
        assert weighting.sets_gradients
    if weighting.sets_gradients:
        with pytest.raises(ValueError, match="trainer.precision=16-mixed: .* bf16-mixed"):
            weighting.check_trainer("16-mixed", 1)
    else:
        weighting.check_trainer("16-mixed", 1)
    weighting.check_trainer("32-true", 2)  # several processes: every scheme reduces what it decides on


def test_aggregation_on_the_representation_is_refused_under_several_processes() -> None:
    from torchjd.aggregation import UPGrad

    from mtlrec.weighting.aggregation import AggregationWeighting

    AggregationWeighting(UPGrad(), level="representation").check_trainer("32-true", 1)
    with pytest.raises(ValueError, match=r"weighting.level=representation: .* 2 processes; use weighting.level=param"):
        AggregationWeighting(UPGrad(), level="representation").check_trainer("32-true", 2)


def test_init_from_an_incompatible_or_missing_run_is_one_line(tmp_path, monkeypatch, capfd) -> None:
    from tests.conftest import train_in_process

    source, _ = train_in_process(tmp_path / "source", [*FAST, "arch=single_task"])  # shares no parameter with MMoE
    assert source["status"] == "complete"
    capfd.readouterr()
    for given, expected in ((tmp_path / "source", "no parameter of best-per-task.ckpt matches this model"),
                            (tmp_path / "nowhere", "no such run folder or checkpoint file")):
        code, err = _cli(monkeypatch, capfd, tmp_path / f"run-{given.name}", "arch=mmoe", f"init_from={given}")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, err[-3000:]
        assert lines[0].startswith(f"mtlrec-train: error: init_from={given}: ") and expected in lines[0]
        assert not (tmp_path / f"run-{given.name}" / "results.json").exists()


def test_a_sweep_job_with_bad_input_leaves_a_failed_record_and_the_sweep_goes_on(tmp_path, monkeypatch, capfd) -> None:
    from mtlrec.report.collect import collect

    sweep = tmp_path / "sweep"
    from mtlrec import train

    monkeypatch.setattr(sys, "argv", ["mtlrec-train", "-m", *FAST, "optimizer.lr=0.001,0", f"hydra.sweep.dir={sweep}"])
    GlobalHydra.instance().clear()
    try:
        train.cli()  # the first value of the sweep passes the command-line check; the second job fails
    finally:
        GlobalHydra.instance().clear()
    collection = collect([sweep])
    assert len(collection.runs) == 1
    assert collection.problems["status"].tolist() == ["failed"]
    assert "optimizer.lr=0: a learning rate must be a number above 0" in collection.problems["reason"].iloc[0]
