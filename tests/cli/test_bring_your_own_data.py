"""A dataset mtlrec has never seen, declared in one YAML file and no Python, trains with every
architecture; and every kind of bad input stops ``mtlrec-train`` with one line naming the file,
the column (and the row) and the fix, a non-zero exit, and no results.json.

The dataset is written in the shape of RecBole's atomic files (``.inter``/``.user``/``.item``,
tab-separated, typed headers such as ``user_id:token``): interactions with a user and an item
side table, multi-hot genres, a title as text, a label derived by a threshold, a time split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlrec.train import CONFIG_DIR
from tests.conftest import skip_unless_arch_fits, train_in_process

ARCHS = sorted(p.stem for p in (Path(CONFIG_DIR) / "arch").glob("*.yaml"))
GENRES = ("action", "comedy", "drama", "horror", "romance")
INTERESTS = ("fashion", "sports", "music", "travel")
WORDS = ("night", "love", "war", "city", "dead", "sun", "blue", "story")

DATASET_YAML = """\
defaults:
  - tabular
  - _self_
name: movies
root: {root}
files: movies.inter
reader: {{format: tsv, strip_types: true}}
joins:
  - {{path: movies.user, key: user_id, reader: {{format: tsv, strip_types: true}}}}
  - path: movies.item
    key: item_id
    reader: {{format: tsv, rename: {{"item_id:token": item_id, "genre:token_seq": genre, "title:token_seq": title}}}}
derived:
  like: {{from: rating, op: ">=", value: 4}}
split:
  kind: time
  column: timestamp
  ratios: [0.7, 0.15, 0.15]
features:
  categorical: [user_id, item_id, gender]
  numeric: [age]
  multi_hot: [{{name: genre, separator: " "}}]
  text: [{{name: title, min_count: 1}}]
tasks:
  - {{name: like, kind: binary, label: like}}
  - {{name: stars, kind: multiclass, label: rating, classes: [1, 2, 3, 4, 5]}}
  - {{name: interests, kind: multilabel, label: interests, separator: " "}}
  - {{name: minutes, kind: regression, label: minutes, mask: watched}}   # only where the film was watched
main_task: like
loader: {{batch_size: 64, eval_batch_size: 512}}
"""


def write_movies(folder: Path, n: int = 600, seed: int = 0) -> None:
    """Interactions whose labels depend on the side tables (so there is something to learn)."""
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({
        "user_id:token": [f"u{i}" for i in range(40)],
        "age:float": rng.integers(16, 70, 40).astype(float),
        "gender:token": rng.choice(["F", "M"], 40),
        "interests:token_seq": [" ".join(rng.choice(INTERESTS, rng.integers(1, 3), replace=False)) for _ in range(40)],
    })
    items = pd.DataFrame({
        "item_id:token": [f"i{i}" for i in range(30)],
        "genre:token_seq": [" ".join(rng.choice(GENRES, rng.integers(1, 4), replace=False)) for _ in range(30)],
        "title:token_seq": [" ".join(rng.choice(WORDS, rng.integers(1, 4))) for _ in range(30)],
    })
    user = rng.integers(0, 40, n)
    item = rng.integers(0, 30, n)
    comedy = items["genre:token_seq"].str.contains("comedy").to_numpy()[item]
    young = users["age:float"].to_numpy()[user] < 40
    rating = np.clip(np.round(3 + 1.2 * (comedy == young) - 0.6 + rng.normal(0, 0.8, n)), 1, 5)
    watched = (rng.random(n) < 0.6).astype(float)
    minutes = np.where(watched == 1, 0.2 * rating + rng.normal(0, 0.05, n), np.nan)  # (hours) unknown where not watched
    inter = pd.DataFrame({"user_id:token": [f"u{u}" for u in user], "item_id:token": [f"i{i}" for i in item],
                          "rating:float": rating, "timestamp:float": rng.permutation(n).astype(float) + 8.8e8,
                          "watched:float": watched, "minutes:float": minutes})
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("inter", inter), ("user", users), ("item", items)):
        frame.to_csv(folder / f"movies.{name}", sep="\t", index=False)


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    """(config dir holding data/movies.yaml, data dir)."""
    base = tmp_path_factory.mktemp("byod")
    write_movies(base / "data")
    (base / "conf" / "data").mkdir(parents=True)
    (base / "conf" / "data" / "movies.yaml").write_text(DATASET_YAML.format(root=base / "data"))
    return base


def _fit(movies: Path, out: Path, *overrides: str) -> dict:
    record, _ = train_in_process(out, [f"hydra.searchpath=[file://{movies / 'conf'}]", "data=movies",
                                       "trainer.max_epochs=3", "logger=none", "print_results=false", *overrides])
    assert record["status"] == "complete" and record["dataset"] == "movies"
    first, last = record["train_loss_per_epoch"][0], record["train_loss_per_epoch"][-1]
    assert all(last[t] < first[t] for t in first), (first, last)  # every task's loss falls: it trains
    return record


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_on_a_dataset_declared_in_yaml(movies, arch, tmp_path) -> None:
    skip_unless_arch_fits(arch, ["like", "stars", "interests", "minutes"])
    out = tmp_path / arch
    record = _fit(movies, out, f"arch={arch}")
    test = record["metrics"]["test"]
    assert 0.0 <= test["like"]["auc"] <= 1.0 and 0.0 <= test["stars"]["accuracy"] <= 1.0
    assert {"auc_macro", "auc_micro"} <= set(test["interests"])
    assert {f"auc/{t}" for t in INTERESTS} <= set(test["interests"])
    schema = json.loads((tmp_path / arch / "schema.json").read_text())
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    assert kinds == {"user_id": "categorical", "item_id": "categorical", "gender": "categorical", "age": "numeric",
                     "genre": "multi_hot", "title": "text"}
    tasks = {t["name"]: t for t in schema["tasks"]}
    assert tasks["like"]["source"] == "rating"  # the derived label's source can never be an input
    assert tasks["interests"]["classes"] == sorted(INTERESTS)
    assert "mse@watched" in test["minutes"] and tasks["minutes"]["mask"] == "watched"


WEIGHTINGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "weighting").glob("*.yaml"))


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_every_weighting_takes_every_task_kind(movies, weighting, tmp_path) -> None:
    record = _fit(movies, tmp_path / weighting, "arch=shared_bottom", f"weighting={weighting}")
    assert set(record["weights"]["final"]) == {"like", "stars", "interests", "minutes"}


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "mtlrec.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_real_entry_point_takes_a_users_config_dir(movies, tmp_path) -> None:
    run_dir = tmp_path / "cli"
    proc = _train("--config-dir", str(movies / "conf"), "data=movies", "arch=mmoe", "trainer.max_epochs=1",
                  f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
