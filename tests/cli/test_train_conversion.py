"""The click-to-conversion commands end to end through the real entry point, on the shipped
samples: ``arch=esmm data=aliccp``, ``arch=aitm data=aliexpress``, ``arch=mmoe data=kuairand``.
Each writes results.json whose metric keys name their sample space; ESMM's pCVR, never trained,
is still served by RunScorer."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from mtlrec.predict import RunScorer
from tests.conftest import SHARED_DATA, sample_overrides

COMMANDS = {
    "esmm-aliccp": ("aliccp", ["arch=esmm", "arch.tower_units=[16,8]"]),
    "aitm-aliexpress": ("aliexpress", ["arch=aitm", "arch.tower_units=[16,8]"]),
    "mmoe-kuairand": ("kuairand", ["arch=mmoe"]),
}


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def run(request, tmp_path_factory):
    data, arch = COMMANDS[request.param]
    run_dir = tmp_path_factory.mktemp(request.param)
    done = subprocess.run([sys.executable, "-m", "mtlrec.train", *sample_overrides(data), *arch,
                           "trainer.max_epochs=2", "logger=none", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, run_dir, json.loads((run_dir / "results.json").read_text()), done.stdout


def test_results_name_each_metric_s_sample_space(run) -> None:
    name, _, record, stdout = run
    assert record["status"] == "complete"
    test = record["metrics"]["test"]
    if name == "mmoe-kuairand":
        assert set(test) == {"click", "long_view", "play_time"}
        assert {"auc@impressions", "logloss@impressions"} <= set(test["click"])
        assert "mse@impressions" in test["play_time"]
        return
    assert set(test["cvr"]) == {"auc@clicked", "logloss@clicked"}  # CVR on clicked impressions only
    assert "auc@impressions" in test["click"] and "auc@impressions" in test["ctcvr"]
    assert record["selection"]["monitor"] == "val/ctcvr/auc@impressions"
    assert set(record["weights"]["final"]) == {"click", "ctcvr"}  # the weighting saw the trained losses only
    assert "auc@clicked" in stdout


def test_every_output_is_served(run) -> None:
    """ESMM's pCVR and AITM's derived pCVR are never trained, yet RunScorer serves them."""
    name, run_dir, _, _ = run
    sample = {"esmm-aliccp": "ali-ccp/ali_ccp_test_sample.csv",
              "aitm-aliexpress": "aliexpress/aliexpress_test_sample.csv",
              "mmoe-kuairand": "kuairand/kuairand_sample.csv"}[name]
    scores = RunScorer(run_dir).predict(pd.read_csv(SHARED_DATA / sample))
    if name == "mmoe-kuairand":
        assert set(scores) == {"click", "long_view", "play_time"}
        return
    assert set(scores) == {"click", "cvr", "ctcvr"}
    assert ((scores["ctcvr"] <= scores["click"] + 1e-6) | (name != "esmm-aliccp")).all()
    assert ((0 <= scores["cvr"]) & (scores["cvr"] <= 1)).all()
