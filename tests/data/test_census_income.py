"""load_census_income on the committed real-row fixture, and on the full UCI files when present.

Expected numbers are computed here straight from the gzip'd text (``line.split(", ")``), not with
the loader's pandas code, so a parsing mistake in the loader cannot agree with itself.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import mtlrec.data.census_income as ci
from mtlrec.data.census_income import COLUMNS, load_census_income
from mtlrec.data.download import ChecksumError, DatasetNotFoundError, file_digest
from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "census"
FULL = REPO.parent / "shared" / "data" / "census-income-kdd"
FULL_PRESENT = (FULL / "census-income.data.gz").is_file() and (FULL / "census-income.test.gz").is_file()

TRAIN, TEST = "census-income.data.gz", "census-income.test.gz"
NUMERIC = ["age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp", "weeks_worked"]
MONEY = {"wage_per_hour", "capital_gains", "capital_losses", "stock_dividends"}
COLLEGE = (
    "Associates degree-academic program",
    "Associates degree-occup /vocational",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)


def raw_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as f:
        rows = [line.rstrip("\n").split(", ") for line in f]
    assert all(len(r) == 42 for r in rows)
    return rows


def raw_labels(rows: list[list[str]]) -> dict[str, np.ndarray]:
    return {
        "income": np.array([r[41] == "50000+." for r in rows], dtype=float),
        "marital": np.array([r[7] == "Never married" for r in rows], dtype=float),
        "education": np.array([r[4] in COLLEGE for r in rows], dtype=float),
    }


@pytest.fixture(scope="module")
def g1() -> RawDataset:
    return load_census_income(str(FIXTURE))


@pytest.fixture(scope="module")
def g2() -> RawDataset:
    return load_census_income(str(FIXTURE), group=2)


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    root = tmp_path / "census-income-kdd"
    shutil.copytree(FIXTURE, root)
    return root


def write_lines(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as f:
        f.write("".join(lines))


# -- fixture: group 1 ---------------------------------------------------------------------------
def test_fixture_is_real_and_small() -> None:
    sizes = [(FIXTURE / n).stat().st_size for n in (TRAIN, TEST)]
    assert sum(sizes) < 100_000
    # the first 400 lines of the full UCI files (see tests/fixtures/census/README.md)
    assert file_digest(FIXTURE / TRAIN, gunzip=True) == "91a97de25be5c950e8856f1385c0c810"
    assert file_digest(FIXTURE / TEST, gunzip=True) == "bd147771c99790982d697aa8355b64c4"
    assert raw_labels(raw_rows(FIXTURE / TRAIN))["income"].sum() == 16


def test_group1_shapes_and_tasks(g1: RawDataset) -> None:
    assert g1.name == "census_income_group1"
    assert {k: v.shape for k, v in g1.splits.items()} == {"train": (400, 44), "val": (200, 44), "test": (200, 44)}
    s = g1.schema
    assert s.task_names == ["income", "marital"]
    assert s.main_task == "income"
    assert [(t.kind, t.label, t.mask) for t in s.tasks] == [("binary", "income", None), ("binary", "marital", None)]
    for df in g1.splits.values():
        assert list(df.columns) == [*COLUMNS, "income", "marital"]
        for t in ("income", "marital"):
            assert df[t].dtype == np.float64
            assert set(np.unique(df[t])) <= {0.0, 1.0}


def test_group1_train_labels_match_raw_text(g1: RawDataset) -> None:
    expected = raw_labels(raw_rows(FIXTURE / TRAIN))
    train = g1.splits["train"]
    np.testing.assert_array_equal(train["income"].to_numpy(), expected["income"])
    np.testing.assert_array_equal(train["marital"].to_numpy(), expected["marital"])
    assert train["income"].sum() == 16 and train["marital"].sum() == 183
    assert train["income"].mean() == pytest.approx(16 / 400)


def test_val_test_is_a_seeded_half_split_of_the_test_file(g1: RawDataset) -> None:
    rows = raw_rows(FIXTURE / TEST)
    expected = raw_labels(rows)
    weight = np.array([float(r[24]) for r in rows])
    perm = np.random.default_rng(0).permutation(400)
    val, test = g1.splits["val"], g1.splits["test"]
    np.testing.assert_array_equal(val["instance_weight"].to_numpy(), weight[perm[:200]])
    np.testing.assert_array_equal(test["instance_weight"].to_numpy(), weight[perm[200:]])
    for t in ("income", "marital"):
        np.testing.assert_array_equal(val[t].to_numpy(), expected[t][perm[:200]])
        np.testing.assert_array_equal(test[t].to_numpy(), expected[t][perm[200:]])
    assert val["income"].sum() + test["income"].sum() == 22
    assert val["marital"].sum() + test["marital"].sum() == 188
    assert list(val.index) == list(range(200)) and list(test.index) == list(range(200))

    again = load_census_income(str(FIXTURE), split_seed=0)
    pd.testing.assert_frame_equal(again.splits["val"], val)
    other = load_census_income(str(FIXTURE), split_seed=1)
    assert not np.array_equal(other.splits["val"]["instance_weight"], val["instance_weight"])
    pd.testing.assert_frame_equal(other.splits["train"], g1.splits["train"])


# The MMoE paper (§6.2) removes education and marital status from the inputs in both groups; the
# lists are written out here (file order), not derived from the loader's constants.
SHARED_INPUTS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "wage_per_hour", "hs_college",
    "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member", "unemp_reason",
    "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat",
    "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18",
    "country_father", "country_mother", "country_self", "citizenship", "own_or_self", "vet_question",
    "vet_benefits", "weeks_worked", "year",
]  # fmt: skip
GROUP1_INPUTS = SHARED_INPUTS  # income_50k is the label
GROUP2_INPUTS = [*SHARED_INPUTS, "income_50k"]  # income is not a task in group 2: an ordinary input


def test_group1_inputs_are_exactly_the_papers(g1: RawDataset) -> None:
    s = g1.schema
    names = [f.name for f in s.features]
    assert names == GROUP1_INPUTS and len(names) == 38
    for col in ("education", "marital_stat", "income_50k", "instance_weight", "income", "marital"):
        assert col not in names
    assert set(s.excluded) == {"income_50k", "marital_stat", "education", "instance_weight"}
    assert [f.name for f in s.of_kind("numeric")] == NUMERIC
    assert {f.name for f in s.of_kind("numeric") if f.options.get("log1p")} == MONEY
    cats = {f.name for f in s.of_kind("categorical")}
    assert {"det_ind_code", "det_occ_code", "own_or_self", "vet_benefits", "year"} <= cats
    assert len(cats) == 31
    # the leakage guard refuses the excluded columns as features
    for col in ("income_50k", "marital_stat", "education", "instance_weight"):
        with pytest.raises(SchemaError, match=f"leakage guard: column '{col}'"):
            Schema(s.features + (FeatureSpec(col, "categorical"),), s.tasks, s.main_task, s.excluded)


def test_group1_keep_education_is_an_opt_in_deviation() -> None:
    kept = load_census_income(str(FIXTURE), keep_education=True).schema
    assert [f.name for f in kept.features] == [*GROUP1_INPUTS[:4], "education", *GROUP1_INPUTS[4:]]
    assert "education" not in kept.excluded and "marital_stat" in kept.excluded
    with pytest.raises(SchemaError, match="keep_education=true only applies to data.group=1"):
        load_census_income(str(FIXTURE), group=2, keep_education=True)


def test_dtypes_and_missing_marker(g1: RawDataset) -> None:
    train = g1.splits["train"]
    rows = raw_rows(FIXTURE / TRAIN)
    for f in g1.schema.of_kind("numeric"):
        assert train[f.name].dtype == np.float64
    for f in g1.schema.of_kind("categorical"):
        assert pd.api.types.is_string_dtype(train[f.name]), f.name
        assert train[f.name].isna().sum() == 0, f.name
    assert train["year"].tolist() == [r[40] for r in rows]
    assert train["det_ind_code"].tolist() == [r[2] for r in rows]
    assert train["age"].tolist() == [float(r[0]) for r in rows]
    assert train["capital_gains"].sum() == sum(float(r[16]) for r in rows)
    # "?" is kept as a value of its own
    n_q = sum(r[25] == "?" for r in rows)
    assert n_q > 0
    assert (train["mig_chg_msa"] == "?").sum() == n_q


# -- fixture: group 2 ---------------------------------------------------------------------------
def test_group2_tasks_and_labels(g2: RawDataset) -> None:
    assert g2.name == "census_income_group2"
    s = g2.schema
    assert s.task_names == ["education", "marital"]
    assert s.main_task == "education"
    assert set(s.excluded) == {"education", "marital_stat", "instance_weight"}
    names = [f.name for f in s.features]
    assert names == GROUP2_INPUTS and len(names) == 39
    assert not set(names) & {"education", "marital_stat", "instance_weight", "marital"}
    assert {k: v.shape for k, v in g2.splits.items()} == {"train": (400, 43), "val": (200, 43), "test": (200, 43)}

    train_raw = raw_labels(raw_rows(FIXTURE / TRAIN))
    np.testing.assert_array_equal(g2.splits["train"]["education"].to_numpy(), train_raw["education"])
    assert g2.splits["train"]["education"].sum() == 85
    assert g2.splits["val"]["education"].sum() + g2.splits["test"]["education"].sum() == 64
    assert g2.splits["train"]["education"].dtype == np.float64


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", [0, 3, "2", True])
def test_wrong_group(group: object) -> None:
    with pytest.raises(SchemaError) as err:
        load_census_income(str(FIXTURE), group=group)  # type: ignore[arg-type]
    msg = str(err.value)
    assert f"data.group={group!r} is not a Census-Income task group" in msg
    assert "data.group=1" in msg and "data.group=2" in msg


def test_wrong_group_is_reported_before_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="data.group"):
        load_census_income(str(tmp_path / "nowhere"), group=5)


def test_missing_folder_names_files_and_fixes(tmp_path: Path) -> None:
    root = tmp_path / "nowhere" / "census-income-kdd"
    with pytest.raises(DatasetNotFoundError) as err:
        load_census_income(str(root))
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert f"the folder {root} must hold 'census-income.data.gz' and 'census-income.test.gz'" in msg
    assert "(missing: 'census-income.data.gz', 'census-income.test.gz')" in msg
    assert "copy the UCI files there by hand" in msg
    assert "set data.download=true" in msg
    assert not root.exists()  # nothing created without download=true


def test_one_missing_file_is_named(copied: Path) -> None:
    (copied / TEST).unlink()
    with pytest.raises(DatasetNotFoundError, match=r"\(missing: 'census-income.test.gz'\)"):
        load_census_income(str(copied))


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (lambda fields: fields[:-1], 5),  # one field short: the parser pads it silently
        (lambda fields: fields[:-6], 5),  # several short: a numeric column is hit
        (lambda fields: fields + ["extra"], 5),  # one too many
        (lambda fields: fields + ["extra"], 1),  # first line sets the width
        (lambda fields: fields[:-1], 400),  # last line
    ],
)
def test_wrong_field_count_names_file_and_line(copied: Path, edit, line: int) -> None:  # noqa: ANN001
    path = copied / TRAIN
    with gzip.open(path, "rt") as f:
        lines = f.readlines()
    fields = lines[line - 1].rstrip("\n").split(", ")
    new = edit(fields)
    lines[line - 1] = ", ".join(new) + "\n"
    write_lines(path, lines)
    with pytest.raises(ValueError) as err:
        load_census_income(str(copied))
    msg = str(err.value)
    assert msg.startswith(f"{path}: line {line} has {len(new)} fields, expected 42"), msg
    assert not isinstance(err.value, SchemaError)


def test_not_gzip_is_a_clear_error(copied: Path) -> None:
    (copied / TEST).write_text("this is not gzip\n")
    with pytest.raises(ValueError, match=r"census-income\.test\.gz: cannot be read as gzip'd text"):
        load_census_income(str(copied))


def test_unknown_label_value_is_an_error(copied: Path) -> None:
    path = copied / TRAIN
    with gzip.open(path, "rt") as f:
        lines = f.readlines()
    lines[9] = lines[9].replace("- 50000.", "50000+")  # dropped trailing dot: would read as negative
    write_lines(path, lines)
    with pytest.raises(ValueError, match=r"column 'income_50k' \(source of task 'income'\) has unexpected values \['50000\+'\]"):
        load_census_income(str(copied))
    load_census_income(str(copied), group=2)  # income is not a task there


# -- download wiring (file:// URLs to the fixture; never the network) ---------------------------
def _local_files(md5s: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    return {
        split: (name, (FIXTURE / name).as_uri(), md5s[split])
        for split, name in (("train", TRAIN), ("test", TEST))
    }


def test_download_fetches_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md5s = {"train": "91a97de25be5c950e8856f1385c0c810", "test": "bd147771c99790982d697aa8355b64c4"}
    monkeypatch.setattr(ci, "FILES", _local_files(md5s))
    root = tmp_path / "data" / "census-income-kdd"
    ds = load_census_income(str(root), download=True)
    assert sorted(p.name for p in root.iterdir()) == [TRAIN, TEST]
    assert ds.splits["train"].shape == (400, 44)


def test_download_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci, "FILES", _local_files({"train": "0" * 32, "test": "0" * 32}))
    root = tmp_path / "census-income-kdd"
    with pytest.raises(ChecksumError, match="census-income.data.gz"):
        load_census_income(str(root), download=True)
    assert list(root.iterdir()) == []


def test_download_network_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {s: (n, (tmp_path / "offline" / n).as_uri(), m) for s, (n, _, m) in ci.FILES.items()}
    monkeypatch.setattr(ci, "FILES", files)
    root = tmp_path / "census-income-kdd"
    with pytest.raises(DatasetNotFoundError, match="copy the file there by hand"):
        load_census_income(str(root), download=True)


def test_real_urls_and_checksums() -> None:
    base = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
    assert ci.FILES == {
        "train": (TRAIN, base + TRAIN, "887f4dc410a99bc332bddbb0a4195b88"),
        "test": (TEST, base + TEST, "b82952d217858365c8e597827e3e5468"),
    }


# -- Hydra config -------------------------------------------------------------------------------
def test_hydra_config_instantiates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.utils import instantiate

    (tmp_path / "census-income-kdd").symlink_to(FIXTURE, target_is_directory=True)
    monkeypatch.setenv("MTLREC_DATA_ROOT", str(tmp_path))
    cfg = OmegaConf.load(REPO / "conf" / "data" / "census_income.yaml")
    loader = {"batch_size": 1024, "eval_batch_size": 16384, "batches_per_epoch": None}
    assert OmegaConf.to_container(cfg.loader) == loader
    cfg.pop("loader")
    ds = instantiate(cfg)
    assert isinstance(ds, RawDataset)
    assert ds.name == "census_income_group1"
    assert ds.splits["train"].shape == (400, 44)
    cfg.group = 2
    assert instantiate(cfg).schema.main_task == "education"


# -- full data (shared/data next to the repository) ---------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not FULL_PRESENT, reason=f"full Census-Income files not found in {FULL}")
def test_full_group1() -> None:
    ds = load_census_income(str(FULL))
    tr, va, te = (ds.splits[s] for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (199_523, 49_881, 49_881)
    assert tr["income"].sum() == 12_382
    assert tr["income"].mean() == pytest.approx(0.0621, abs=5e-5)
    assert tr["marital"].sum() == 86_485
    assert va["income"].sum() + te["income"].sum() == 6_186  # test-file count from .names
    assert [f.name for f in ds.schema.features] == GROUP1_INPUTS
    # val + test together are exactly the rows of the test file (as a multiset), split in half
    rows = raw_rows(FULL / TEST)
    assert len(rows) == 99_762
    both = pd.concat([va, te])
    for col in ("instance_weight", "age"):
        i = COLUMNS.index(col)
        np.testing.assert_array_equal(np.sort(both[col].to_numpy()), np.sort([float(r[i]) for r in rows]))
    assert sorted(both["country_self"]) == sorted(r[34] for r in rows)
    assert both["marital"].sum() == raw_labels(rows)["marital"].sum()


@pytest.mark.slow
@pytest.mark.skipif(not FULL_PRESENT, reason=f"full Census-Income files not found in {FULL}")
def test_full_group2() -> None:
    ds = load_census_income(str(FULL), group=2)
    tr = ds.splits["train"]
    # Associates (4,363 + 5,358) + Bachelors 19,865 + Masters 6,541 + Prof school 1,793 + Doctorate 1,263
    assert tr["education"].sum() == 39_183
    assert tr["marital"].sum() == 86_485
    assert (len(ds.splits["val"]), len(ds.splits["test"])) == (49_881, 49_881)


def test_exclude_keeps_extra_columns_out_of_the_features() -> None:
    raw = load_census_income(str(FIXTURE), exclude=["det_hh_fam_stat", "det_hh_summ"])
    names = {f.name for f in raw.schema.features}
    assert "det_hh_fam_stat" not in names and "det_hh_summ" not in names
    assert {"det_hh_fam_stat", "det_hh_summ"} <= set(raw.schema.excluded)
    with pytest.raises(SchemaError, match=r"data.exclude: unknown Census column\(s\) \['nope'\]"):
        load_census_income(str(FIXTURE), exclude=["nope"])
