"""``mtlrec-train data=grocery backbone=vgg16 arch=mmoe`` end to end through the real entry point
(on the committed fixture, at 32 px): test metrics for the three tasks; a second identical run
reads every feature from the cache and ends with the same metrics; the trained run scores new
rows through :class:`RunScorer` exactly as it was tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlrec.data.grocery import load_grocery
from mtlrec.predict import RunScorer
from tests.conftest import train_in_process

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"
COMMAND = ["data=grocery", f"data.root={FIXTURE}", "backbone=vgg16", "backbone.input_size=32", "arch=mmoe",
           "trainer.max_epochs=3", "seed=1"]


def _train(run_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MTLREC_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "mtlrec.train", *COMMAND, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return [(_train(root / name, root / "cache"), root / name) for name in ("first", "second")]


def test_the_run_writes_test_metrics_for_the_three_tasks(two_runs) -> None:
    done, run_dir = two_runs[0]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "image features: 48 images, extracted 48" in done.stderr
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "complete"
    assert {t: set(m) for t, m in record["metrics"]["test"].items()} == {
        t: {"accuracy", "logloss"} for t in ("fine", "coarse", "category")}


def test_a_second_identical_run_reads_the_cache_and_ends_the_same(two_runs) -> None:
    (_, first_dir), (again, second_dir) = two_runs
    assert again.returncode == 0, again.stderr[-2000:]
    assert "image features: 48 images, all cached" in again.stderr
    first, second = (json.loads((d / "results.json").read_text()) for d in (first_dir, second_dir))
    assert first["metrics"] == second["metrics"]


def test_the_trained_run_scores_rows_as_it_was_tested(two_runs, monkeypatch) -> None:
    _, run_dir = two_runs[0]
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(run_dir.parent / "cache"))
    record = json.loads((run_dir / "results.json").read_text())
    test = load_grocery(FIXTURE).splits["test"]
    scores = RunScorer(run_dir).predict(test)
    assert scores["fine"].shape == (12, 81)
    accuracy = float(np.mean(scores["category"].argmax(1) == test["category"].map(
        {"Fruit": 0, "Packages": 1, "Vegetables": 2}).to_numpy()))
    assert accuracy == pytest.approx(record["metrics"]["test"]["category"]["accuracy"], abs=1e-6)


def test_a_yaml_dataset_maps_item_ids_to_photos_beside_other_features(tmp_path, monkeypatch) -> None:
    """The generic loader takes an ``image`` feature: item ids made paths by a template, next to a
    categorical and a numeric column, trained with any architecture."""
    photos = sorted((FIXTURE / "dataset" / "train").rglob("*.jpg"))[:12]
    items = tmp_path / "items"
    items.mkdir()
    for k, photo in enumerate(photos):
        (items / f"sku{k}.jpg").write_bytes(photo.read_bytes())
    rng = np.random.default_rng(0)
    n = 120
    item = rng.integers(0, len(photos), n)
    frame = pd.DataFrame({"item_id": [f"sku{k}" for k in item], "store": rng.choice(["a", "b"], n),
                          "price": rng.normal(size=n), "bought": (item % 2).astype(int)})
    frame.to_csv(tmp_path / "log.csv", index=False)
    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "shop.yaml").write_text(
        "defaults: [tabular, _self_]\nname: shop\n"
        f"root: {tmp_path}\nfiles: log.csv\nsplit: {{kind: ratio, ratios: [0.6, 0.2, 0.2], seed: 0}}\n"
        f"features:\n  categorical: [store]\n  numeric: [price]\n"
        f"  image: [{{name: item_id, root: {items}, template: '{{}}.jpg'}}]\n"
        "tasks: [{name: bought, kind: binary, label: bought}]\nmain_task: bought\n")
    monkeypatch.setenv("MTLREC_CACHE_DIR", str(tmp_path / "cache"))
    record, _ = train_in_process(tmp_path / "run", [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=shop",
                                                      "backbone=vgg16", "backbone.input_size=32",
                                                      "arch=shared_bottom", "trainer.max_epochs=2"])
    assert record["status"] == "complete" and "auc" in record["metrics"]["test"]["bought"]
