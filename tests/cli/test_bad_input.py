"""Bad input stops ``mtlrec-train`` with exactly one line on stderr that names the file, the column
(and the row, counted from 0 in the file's data rows) and the fix; the exit status is non-zero and
no results.json is written. One test per case of the input-side issue, through the real entry point
with a user's config folder (``--config-dir``), on a small dataset declared in YAML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHOP_YAML = """\
defaults:
  - tabular
  - _self_
name: shop
root: {root}
files: shop.csv
joins:
  - {{path: users.csv, key: user_id}}
split: {{kind: column, column: split}}
derived:
  like: {{from: score, op: ">=", value: 6}}
features:
  categorical: [user_id, item]
  numeric: [price, age]
  multi_hot: [tags]
  text: [{{name: review, min_count: 1}}]
tasks:
  - {{name: like, kind: binary, label: like}}
  - {{name: bought, kind: binary, label: bought}}
  - {{name: stars, kind: multiclass, label: rating, classes: [1, 2, 3, 4, 5]}}
  - {{name: interests, kind: multilabel, label: interests}}
  - {{name: spend, kind: regression, label: spend, mask: clicked}}
main_task: like
loader: {{batch_size: 32, eval_batch_size: 256}}
"""


def shop_frames(n: int = 120) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A valid dataset: every split holds both values of each binary label."""
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    rating = np.tile([1, 2, 3, 4, 5], n // 5)
    shop = pd.DataFrame({
        "order_id": np.arange(n), "user_id": [f"u{i % 12}" for i in range(n)], "item": rng.choice(["a", "b", "c"], n),
        "price": rng.uniform(5, 50, n).round(2), "tags": rng.choice(["red|big", "blue", "", "red"], n),
        "review": rng.choice(["great dress", "too small", "love it", "returned it"], n), "rating": rating,
        "score": np.tile(np.arange(11), n // 11 + 1)[:n],
        "bought": np.tile([0, 1], n // 2), "spend": rng.uniform(0, 100, n).round(2),
        "interests": rng.choice(["x|y", "y", "z", ""], n), "split": split, "clicked": (np.arange(n) % 3 > 0).astype(int),
    })
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(12)], "age": rng.integers(18, 70, 12)})
    return shop, users


def _write(folder: Path, shop: pd.DataFrame, users: pd.DataFrame) -> Path:
    """The data files and conf/data/shop.yaml under ``folder``; returns the config dir."""
    folder.mkdir(parents=True, exist_ok=True)
    shop.to_csv(folder / "shop.csv", index=False)
    users.to_csv(folder / "users.csv", index=False)
    conf = folder / "conf"
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / "shop.yaml").write_text(SHOP_YAML.format(root=folder))
    return conf


def _train(conf: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "mtlrec.train", "--config-dir", str(conf), "data=shop", "arch=shared_bottom",
           "trainer.max_epochs=1", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300)


def _set(column: str, row: int, value) -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    def edit(shop: pd.DataFrame, users: pd.DataFrame) -> None:
        shop[column] = shop[column].astype(object)
        shop.loc[row, column] = value
    return edit


def _drop_user(shop: pd.DataFrame, users: pd.DataFrame) -> None:
    users.drop(index=users.index[users.user_id == "u3"], inplace=True)


def _no_test_rows(shop: pd.DataFrame, users: pd.DataFrame) -> None:
    shop.loc[shop.split == "test", "split"] = "val"


def _val_bought_all_zero(shop: pd.DataFrame, users: pd.DataFrame) -> None:
    shop.loc[shop.split == "val", "bought"] = 0


def _drop_column(column: str) -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    def edit(shop: pd.DataFrame, users: pd.DataFrame) -> None:
        shop.drop(columns=[column], inplace=True)
    return edit


def _corrupt_gzip(folder: Path) -> None:
    data = (folder / "shop.csv").read_bytes()
    import gzip

    packed = gzip.compress(data)
    (folder / "shop.csv.gz").write_bytes(packed[: len(packed) // 2] + b"\x00garbage" * 10)


def _truncated_parquet(folder: Path) -> None:
    frame = pd.read_csv(folder / "shop.csv")
    frame.to_parquet(folder / "shop.parquet")
    data = (folder / "shop.parquet").read_bytes()
    (folder / "shop.parquet").write_bytes(data[: len(data) * 2 // 3])


def _duplicate_header(folder: Path) -> None:
    lines = (folder / "shop.csv").read_text().splitlines()
    lines[0] = lines[0].replace("spend", "price")  # two columns called price
    (folder / "shop.csv").write_text("\n".join(lines) + "\n")


# case -> (edit of the frames, extra overrides, what the one line must contain[, edit of the written files])
CASES = {
    "missing file": (None, ["data.files=nope.csv"], ["data.files", "nope.csv", "data.root"]),
    "missing data folder": (None, ["data.root=/nowhere/shop-data"], ["/nowhere/shop-data", "data.root", "shop.csv"]),
    "unknown column": (None, ["data.features.numeric=[prize,age]"], ["data.features.numeric", "'prize'",
                                                                     "shop.csv", "did you mean 'price'"]),
    "side-table key missing": (_drop_user, [], ["data.joins[0]", "users.csv", "'user_id'", "'u3'", "shop.csv"]),
    "delimiter gives one column": (None, ["data.reader.delimiter=';'"], ["shop.csv", "delimiter ';'",
                                                                       "comma-separated", 'delimiter: ","']),
    "NaN label": (_set("bought", 7, np.nan), [], ["shop.csv", "'bought'", "missing value", "row 7", "mask"]),
    "inf label": (_set("spend", 10, np.inf), [], ["shop.csv", "'spend'", "infinite", "row 10"]),
    "mask that is not 0/1": (_set("clicked", 11, "yes"), [], ["shop.csv", "mask column 'clicked'", "task 'spend'",
                                                                "row 11", "'yes'", "0 or 1"]),
    "multiclass label outside the classes": (_set("rating", 4, 6), [], ["shop.csv", "'rating'", "row 4", "6",
                                                                        "declared classes"]),
    "binary label not 0/1": (_set("bought", 5, 2), [], ["shop.csv", "'bought'", "0/1", "row 5", "holds 2"]),
    "malformed multilabel cell": (_set("interests", 3, "x||y"), [], ["shop.csv", "'interests'", "row 3",
                                                                     "malformed", "'x||y'"]),
    "empty split": (_no_test_rows, [], ["test split is empty", "shop.csv", "split"]),
    "binary task with one label value": (_val_bought_all_zero, [], ["shop/val", "shop.csv", "'bought'",
                                                                    "only label 0", "AUC is undefined"]),
    "derived label's source as a feature": (None, ["data.features.numeric=[price,age,score]"],
                                            ["leakage guard", "'score'", "'like'", "derived", "shop.csv"]),
    "label as a feature": (None, ["data.features.numeric=[price,age,spend]"],
                           ["leakage guard", "'spend'", "label of task 'spend'"]),
    "corrupt gzip": (None, ["data.files=shop.csv.gz"], ["shop.csv.gz", "cannot be read", "compression"],
                     _corrupt_gzip),
    "truncated parquet": (None, ["data.files=shop.parquet"], ["shop.parquet", "not a readable parquet file"],
                          _truncated_parquet),
    "duplicate column names": (None, [], ["shop.csv", "'price'", "appears twice", "rename or drop one"],
                               _duplicate_header),
    "missing label column": (_drop_column("bought"), [], ["shop.csv", "'bought'"]),
    "NaN in a numeric feature under missing: error": (
        _set("price", 9, np.nan), ["data.features.numeric=[{name: price, missing: error}, age]"],
        ["shop.csv", "'price'", "row 9", "missing: error", "missing: indicator"]),
    "inf in a numeric feature": (_set("price", 13, np.inf), [], ["shop.csv", "'price'", "infinite", "row 13",
                                                                 "infinite: missing"]),
    "main task that is not a task": (None, ["data.main_task=liked"], ["main_task", "'liked'", "like"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_no_results(case, tmp_path) -> None:
    edit, overrides, expected, *after = CASES[case]
    shop, users = shop_frames()
    if edit is not None:
        edit(shop, users)
    conf = _write(tmp_path / "data", shop, users)
    for change in after:
        change(tmp_path / "data")
    proc = _train(conf, tmp_path / "run", *overrides)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert len(lines) == 1, proc.stderr[-4000:]
    line = lines[0]
    assert line.startswith("mtlrec-train: error: ")
    missing = [e for e in expected if e not in line]
    assert not missing, f"{missing} not in: {line}"
    assert not list(tmp_path.rglob("results.json"))


def test_a_tag_seen_only_at_validation_is_out_of_vocabulary_not_an_error(tmp_path) -> None:
    shop, users = shop_frames()
    shop.loc[shop.index[shop.split == "val"][:3], "interests"] = "x|brand-new-tag"
    conf = _write(tmp_path / "data", shop, users)
    proc = _train(conf, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "complete"
    tags = next(t for t in json.loads((tmp_path / "run" / "schema.json").read_text())["tasks"] if t["name"] == "interests")
    assert tags["classes"] == ["x", "y", "z"]  # fit on training: the new tag is not a class
    assert {"auc/x", "auc/y", "auc/z"} <= set(record["metrics"]["val"]["interests"])


def test_a_loss_that_becomes_infinite_fails_the_run_and_says_where(tmp_path) -> None:
    """The non-finite guard: a regression label in the 1e21s overflows the float32 MSE at once."""
    shop, users = shop_frames()
    shop["spend"] = shop["spend"] * 1e19
    conf = _write(tmp_path / "data", shop, users)
    proc = _train(conf, tmp_path / "run")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mtlrec-train: run failed: the training loss of task 'spend' became inf at training step 0")
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "failed"
    assert record["failure"] == {"quantity": "training loss", "task": "spend", "step": 0, "value": "inf"}


def test_a_sweep_goes_on_past_a_failed_run_and_the_report_lists_it_as_failed(tmp_path) -> None:
    from mtlrec.report.collect import collect

    shop, users = shop_frames()
    conf = _write(tmp_path / "data", shop, users)
    shop["spend"] = shop["spend"] * 1e19
    shop.to_csv(tmp_path / "data" / "extreme.csv", index=False)
    sweep = tmp_path / "multirun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "mtlrec.train", "--config-dir", str(conf), "-m", "data=shop", "arch=shared_bottom",
           "trainer.max_epochs=1", "data.files=extreme.csv,shop.csv", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    collection = collect([sweep])
    assert len(collection.runs) == 1 and collection.runs["status"].tolist() == ["complete"]
    assert collection.problems["status"].tolist() == ["failed"]
    assert "became inf" in collection.problems["reason"].iloc[0]


GROCERY = Path(__file__).resolve().parents[1] / "fixtures" / "grocery"


def _train_grocery(root: Path, run_dir: Path, *overrides: str, env: dict | None = None) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MTLREC_CACHE_DIR": str(run_dir.parent / "cache"), **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "mtlrec.train", "data=grocery", f"data.root={root}", "backbone=vgg16",
           "backbone.input_size=32", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not list(run_dir.parent.rglob("results.json"))
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_a_corrupt_image_file_is_named_in_one_line(tmp_path) -> None:
    import shutil

    root = tmp_path / "grocery"
    shutil.copytree(GROCERY, root)
    photo = sorted((root / "dataset").rglob("*.jpg"))[0]
    photo.write_bytes(b"this is not a jpeg" * 20)
    lines = _train_grocery(root, tmp_path / "run")
    assert len(lines) == 1 and lines[0].startswith("mtlrec-train: error: "), lines
    assert str(photo) in lines[0] and "not a readable image" in lines[0]


def test_imagenet_weights_offline_are_one_line_naming_the_way_out(tmp_path) -> None:
    """No machine downloads 528 MB here: an empty torch hub cache and a proxy that refuses."""
    proxy = {"TORCH_HOME": str(tmp_path / "hub"), "https_proxy": "http://127.0.0.1:9",
             "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    lines = _train_grocery(GROCERY, tmp_path / "run", "backbone.weights=IMAGENET1K_V1", env=proxy)
    assert len(lines) == 1 and lines[0].startswith("mtlrec-train: error: backbone.weights=IMAGENET1K_V1"), lines
    assert "backbone.weights_path=<file>" in lines[0]


@pytest.mark.sweep
def test_an_optuna_sweep_records_a_failed_trial_goes_on_and_resumes_from_its_storage(tmp_path) -> None:
    import optuna

    shop, users = shop_frames()
    conf = _write(tmp_path / "data", shop, users)
    shop["spend"] = shop["spend"] * 1e19
    shop.to_csv(tmp_path / "data" / "extreme.csv", index=False)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)

    (conf / "hparams_search").mkdir()
    (conf / "hparams_search" / "files.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optuna\n  - _self_\nhydra:\n  sweeper:\n    params:\n"
        "      data.files: choice(extreme.csv, shop.csv)\n")

    def launch(trials: int, sweep: str) -> None:
        cmd = [sys.executable, "-m", "mtlrec.train", "--config-dir", str(conf), "data=shop", "arch=shared_bottom",
               "hparams_search=files", "trainer.max_epochs=1", f"hydra.sweeper.storage={storage}",
               f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.sampler.n_startup_trials=4",
               "hydra.sweeper.sampler.seed=3", f"hydra.sweep.dir={tmp_path / sweep}"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]

    launch(4, "first")
    study = optuna.load_study(study_name="mtlrec", storage=storage)
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "FAIL" in states and "COMPLETE" in states, states
    launch(1, "second")  # the same study, from its storage: one more trial
    assert len(optuna.load_study(study_name="mtlrec", storage=storage).trials) == 5
