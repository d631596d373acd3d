"""UCI Census-Income (KDD), the real-data benchmark of MMoE and PLE.

Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018 (the Census-income experiment), build two multi-task
problems from this data by turning some of its columns into prediction targets:

* **group 1**: ``income`` (income > 50K, the main task) and ``marital`` (never married);
* **group 2**: ``education`` (at least college, the main task) and ``marital``.

They train on the 199,523-row ``census-income.data`` file and split the 99,762-row
``census-income.test`` file 1:1 at random into validation and test; :func:`load_census_income`
does the same. PLE (Tang et al., RecSys 2020) reuses group 1.

Data: https://archive.ics.uci.edu/dataset/117/census+income+kdd (CC BY 4.0). The files are
comma + space separated, have no header and 42 fields per row; ``?`` marks a missing value.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.download import DatasetNotFoundError, fetch
from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec

__all__ = ["COLUMNS", "FILES", "load_census_income"]

#: The 42 columns in file order (the short names used in MMoE code; they follow ``.names``).
COLUMNS: tuple[str, ...] = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin",
    "sex", "union_member", "unemp_reason", "full_or_part_emp", "capital_gains",
    "capital_losses", "stock_dividends", "tax_filer_stat", "region_prev_res",
    "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight",
    "mig_chg_msa", "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt",
    "num_emp", "fam_under_18", "country_father", "country_mother", "country_self",
    "citizenship", "own_or_self", "vet_question", "vet_benefits", "weeks_worked",
    "year", "income_50k",
)  # fmt: skip

#: Numeric features. Money columns are heavy-tailed (mostly 0, a few huge), hence ``log1p``.
NUMERIC: dict[str, bool] = {
    "age": False,
    "wage_per_hour": True,
    "capital_gains": True,
    "capital_losses": True,
    "stock_dividends": True,
    "num_emp": False,
    "weeks_worked": False,
}

#: ``.names``: "instance weight ... should not be used in the classifiers" (it is a sampling weight).
ALWAYS_EXCLUDED = ("instance_weight",)

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"

#: split -> (file name, URL, md5 of the DECOMPRESSED content). The gzip bytes differ between
#: mirrors (e.g. re-compressed copies) while the content does not, so the content is checked.
FILES: dict[str, tuple[str, str, str]] = {
    "train": ("census-income.data.gz", _UCI + "census-income.data.gz", "887f4dc410a99bc332bddbb0a4195b88"),
    "test": ("census-income.test.gz", _UCI + "census-income.test.gz", "b82952d217858365c8e597827e3e5468"),
}

_INCOME_LEVELS = ("- 50000.", "50000+.")
_INCOME_POSITIVE = "50000+."
_MARITAL_POSITIVE = "Never married"
_MARITAL_LEVELS = (
    "Never married", "Married-civilian spouse present", "Married-spouse absent",
    "Married-A F spouse present", "Separated", "Divorced", "Widowed",
)  # fmt: skip
#: "At least college" for the MMoE group-2 education task: an Associates degree or higher.
_EDUCATION_POSITIVE = (
    "Associates degree-academic program",
    "Associates degree-occup /vocational",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
_EDUCATION_LEVELS = _EDUCATION_POSITIVE + (
    "Children", "Less than 1st grade", "1st 2nd 3rd or 4th grade", "5th or 6th grade",
    "7th and 8th grade", "9th grade", "10th grade", "11th grade", "12th grade no diploma",
    "High school graduate", "Some college but no degree",
)  # fmt: skip

#: task name -> (source column, positive values, all known values of the source column)
_TASK_SOURCES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "income": ("income_50k", (_INCOME_POSITIVE,), _INCOME_LEVELS),
    "marital": ("marital_stat", (_MARITAL_POSITIVE,), _MARITAL_LEVELS),
    "education": ("education", _EDUCATION_POSITIVE, _EDUCATION_LEVELS),
}

#: group -> tasks, main task first (the one used for model selection, as in the paper).
GROUPS: dict[int, tuple[str, str]] = {1: ("income", "marital"), 2: ("education", "marital")}

#: MMoE paper §6.2: "We remove education and marital status from input features as they are treated
#: as labels in these setups" -- both columns, in *both* groups (group 1 does not predict education,
#: yet it is not an input either). ``keep_education=True`` restores raw education in group 1.
PAPER_REMOVED = ("education", "marital_stat")

_FLOAT_COLUMNS = (*NUMERIC, "instance_weight")


def _check_group(group: object) -> int:
    if isinstance(group, bool) or group not in GROUPS:
        raise SchemaError(
            f"data.group={group!r} is not a Census-Income task group; use data.group=1 "
            f"(income + marital, main task income) or data.group=2 (education + marital, main task education)"
        )
    return int(group)  # type: ignore[arg-type]


def _ensure_files(root: Path, download: bool) -> dict[str, Path]:
    paths = {split: root / name for split, (name, _, _) in FILES.items()}
    missing = [split for split, p in paths.items() if not p.is_file()]
    if not missing:
        return paths
    if download:
        for split in missing:
            name, url, md5 = FILES[split]
            fetch(url, paths[split], gunzip_md5=md5)
        return paths
    names = " and ".join(repr(name) for name, _, _ in FILES.values())
    lacking = ", ".join(repr(FILES[s][0]) for s in missing)
    raise DatasetNotFoundError(
        f"Census-Income (KDD) not found: the folder {root} must hold {names} (missing: {lacking}). "
        f"Either copy the UCI files there by hand (from {_UCI} or any mirror; the gzip content is "
        f"checked by md5, not the gzip bytes), or set data.download=true to fetch them. "
        f"The folder can also be moved with the MTLREC_DATA_ROOT environment variable (data.root)."
    )


def _first_bad_line(path: Path) -> tuple[int, int] | None:
    """(line number, field count) of the first non-blank line without 42 fields, else None."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip() and line.count(",") + 1 != len(COLUMNS):
                return lineno, line.count(",") + 1
    return None


def _bad_format(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"{path}: {detail}. Census-Income files have {len(COLUMNS)} comma-separated fields per line "
        f"with no header; this file is damaged or is not a UCI census-income file. Replace it "
        f"(or delete it and set data.download=true)."
    )


def _read(path: Path) -> pd.DataFrame:
    """Read one gzip'd UCI file: numeric columns as float64, all others as strings.

    ``na_filter=False`` keeps ``?`` as its own category (missingness is informative here, e.g.
    four migration columns are ``?`` exactly for the 1995 survey year) and skips NaN detection,
    which also makes the C parser faster. Categorical codes (industry, occupation, year, ...)
    stay strings so they are never treated as magnitudes.
    """
    dtypes = {i: ("float64" if c in _FLOAT_COLUMNS else "str") for i, c in enumerate(COLUMNS)}
    try:
        df = pd.read_csv(
            path,
            header=None,
            sep=",",
            skipinitialspace=True,
            na_filter=False,
            dtype=dtypes,
            engine="c",
            compression="gzip",
        )
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise _bad_format(path, f"cannot be read as gzip'd text ({e})") from e
    except (ValueError, pd.errors.ParserError) as e:
        bad = _first_bad_line(path)
        if bad is not None:
            raise _bad_format(path, f"line {bad[0]} has {bad[1]} fields, expected {len(COLUMNS)}") from e
        raise _bad_format(path, f"cannot be parsed ({e})") from e
    # A short row is padded silently by the parser (the last field becomes ""), and a file whose
    # first line has the wrong width is read with that width: both show up here.
    if df.shape[1] != len(COLUMNS) or (df.iloc[:, -1] == "").any():
        bad = _first_bad_line(path)
        detail = (
            f"line {bad[0]} has {bad[1]} fields, expected {len(COLUMNS)}"
            if bad is not None
            else f"has {df.shape[1]} columns, expected {len(COLUMNS)}"
        )
        raise _bad_format(path, detail)
    df.columns = list(COLUMNS)
    return df


def _read_cached(path: Path) -> pd.DataFrame:
    """``_read`` memoised per process on (path, size, mtime).

    A sweep run by a pool of worker processes (the joblib launcher) then parses each file once
    per worker instead of once per run (~4 s each). Callers never modify the returned frame.
    """
    stat = path.stat()
    return _read_memo(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_memo(path: str, size: int, mtime_ns: int) -> pd.DataFrame:
    return _read(Path(path))


def _add_labels(df: pd.DataFrame, tasks: tuple[str, ...], path: Path) -> pd.DataFrame:
    """Add one float 0/1 column per task, named after the task (checks the source values first).

    An unknown value in a source column (another file version, a changed spelling) would silently
    become a negative label, so it is an error instead.
    """
    labels = {}
    for task in tasks:
        col, positive, known = _TASK_SOURCES[task]
        unknown = sorted(set(df[col].unique()) - set(known))
        if unknown:
            raise ValueError(
                f"{path}: column {col!r} (source of task {task!r}) has unexpected values {unknown[:5]}; "
                f"expected only {list(known)}. Is this the UCI census-income file?"
            )
        labels[task] = df[col].isin(positive).to_numpy(dtype=np.float64)
    # Group 2's task "education" replaces the raw education column of the same name; the schema
    # declares it a label, so it can never become a feature either way.
    out = df.drop(columns=[t for t in tasks if t in df.columns])
    return out.assign(**labels)


def _schema(group: int, exclude: tuple[str, ...] = (), keep_education: bool = False) -> Schema:
    tasks = GROUPS[group]
    sources = tuple(_TASK_SOURCES[t][0] for t in tasks)
    unknown = sorted(set(exclude) - set(COLUMNS))
    if unknown:
        raise SchemaError(f"data.exclude: unknown Census column(s) {unknown}; columns are {list(COLUMNS)}")
    if keep_education and group != 1:
        raise SchemaError(
            "data.keep_education=true only applies to data.group=1 (in group 2 education is the label); "
            "remove the option or set data.group=1"
        )
    removed = tuple(c for c in PAPER_REMOVED if not (keep_education and c == "education"))
    excluded = tuple(dict.fromkeys((*sources, *removed, *ALWAYS_EXCLUDED, *exclude)))
    features = [
        FeatureSpec(c, "numeric", {"log1p": NUMERIC[c]}) if c in NUMERIC else FeatureSpec(c, "categorical")
        for c in COLUMNS
        if c not in excluded
    ]
    return Schema(
        features=tuple(features),
        tasks=tuple(TaskSpec(t, "binary", label=t) for t in tasks),
        main_task=tasks[0],
        excluded=excluded,
    )


def load_census_income(
    root: str,
    group: int = 1,
    split_seed: int = 0,
    download: bool = False,
    exclude: Sequence[str] = (),
    keep_education: bool = False,
) -> RawDataset:
    """Load Census-Income (KDD) as in the MMoE paper's Census-income experiment (Ma et al., KDD 2018).

    Args:
        root: folder holding ``census-income.data.gz`` and ``census-income.test.gz``.
        group: 1 = tasks ``income`` (main) + ``marital``; 2 = ``education`` (main) + ``marital``.
        split_seed: seed of the random 1:1 val/test split of the ``.test`` file. The paper splits
            the test file at random without giving a seed; fixing it makes runs comparable.
        download: fetch missing files from UCI (the decompressed content is md5-checked).
        exclude: further columns to keep out of the features. The paper keeps every other column;
            note that ``det_hh_fam_stat`` and ``det_hh_summ`` (household role) nearly determine
            ``marital`` (e.g. every "Spouse of householder" is married), so exclude them to study
            the marital task without these proxies.
        keep_education: group 1 only: keep the raw ``education`` column as an input. The paper
            removes it (with ``marital_stat``) in both groups; keeping it is a deviation (it alone
            predicts income with AUC about 0.84). Off by default.

    Returns:
        ``RawDataset`` named ``census_income_group{group}`` with splits ``train`` (the whole
        ``.data`` file, 199,523 rows), ``val`` and ``test`` (49,881 rows each). Each frame holds the
        raw columns (numeric ones float64, the rest strings, ``?`` kept as a value) plus one
        float 0/1 column per task. ``education``, ``marital_stat`` (the paper's label columns, in
        both groups), ``income_50k`` and ``instance_weight`` are declared ``excluded`` in the
        schema, so they can never be features.
        (Group 2's ``education`` label column replaces the raw column of the same name.)

    Raises:
        SchemaError: ``group`` is not 1 or 2.
        DatasetNotFoundError: a file is missing and ``download`` is false, or the download failed.
        ValueError: a file is damaged (wrong field count: names the file and line).
    """
    group = _check_group(group)
    root_path = Path(root).expanduser()
    paths = _ensure_files(root_path, download)
    tasks = GROUPS[group]

    train = _add_labels(_read_cached(paths["train"]), tasks, paths["train"])
    holdout = _add_labels(_read_cached(paths["test"]), tasks, paths["test"])

    perm = np.random.default_rng(split_seed).permutation(len(holdout))
    half = len(holdout) // 2
    val = holdout.iloc[perm[:half]].reset_index(drop=True)
    test = holdout.iloc[perm[half:]].reset_index(drop=True)

    return RawDataset(
        schema=_schema(group, tuple(exclude), bool(keep_education)),
        splits={"train": train.reset_index(drop=True), "val": val, "test": test},
        name=f"census_income_group{group}",
    )
