"""The files of a declared dataset: where they are, how they are read.

**The format does not change the data.** The same table as CSV, TSV or Parquet gives the same
frame, dtypes included (numbers become int64/float64 whatever the file stored), so a model
trained on one export scores another. A missing file is downloaded when a checksum says which
file is wanted, and a TSV read as CSV (or any other likely delimiter mix-up) is named as such
instead of giving a one-column frame.
"""

from __future__ import annotations

import csv
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from mtlrec.data.download import DatasetNotFoundError, fetch
from mtlrec.data.messages import one_line
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular.options import checked_column, checked_entry, checked_options

READER_DEFAULTS: dict[str, Any] = {
    "format": "auto", "delimiter": None, "header": True, "names": None, "rename": {}, "encoding": "utf-8",
    "strip_types": False, "text_columns": [], "na_values": None,
}  # fmt: skip
DOWNLOAD_KEYS = ("url", "sha256", "md5", "gunzip_md5")

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_DELIMITERS = {"csv": ",", "tsv": "\t"}
LIKELY_DELIMITERS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def locate(given: object, root: str | None, option: str, download: Mapping | None) -> Path:
    """The path of ``given`` under ``root``; downloaded first when missing and ``download`` says how."""
    path = Path(str(given)).expanduser()
    if root is not None and not path.is_absolute():
        path = Path(str(root)).expanduser() / path
    if path.is_file():
        return path
    if download:
        spec = checked_entry(download, DOWNLOAD_KEYS, ("url",), f"{option} download")
        checksums = {k: v for k, v in spec.items() if k != "url" and v}
        if not checksums:
            raise SchemaError(
                f"{option} download: give sha256 (or md5 / gunzip_md5) of {path.name}, so that an error page "
                f"or another file version is never parsed as the data"
            )
        return fetch(spec["url"], path, **checksums)
    where = f" (data.root={root})" if root is not None else ""
    raise DatasetNotFoundError(
        f"{option}: file {str(given)!r} not found at {path.absolute()}{where}; fix the path, set data.root to the "
        f"folder that holds it, or give data.download {{url: ..., sha256: ...}} to fetch it"
    )


def _file_format(path: Path, declared: str, option: str) -> str:
    if declared != "auto":
        if declared not in ("csv", "tsv", "parquet"):
            raise SchemaError(f"{option}.format: {declared!r} is not a format; use auto, csv, tsv or parquet")
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSIONS
    kind = SUFFIX_FORMATS.get(suffixes[-2 if compressed else -1]) if len(suffixes) > compressed else None
    if kind is None or (kind == "parquet" and compressed):
        raise SchemaError(
            f"{option}.format: cannot tell the format of {path} from its name; set {option}.format: csv, tsv "
            f"or parquet (csv/tsv may be compressed: {', '.join(COMPRESSIONS)})"
        )
    return kind


def read_table(path: Path, given: Mapping | None, option: str) -> pd.DataFrame:
    """One file as a frame with normalised dtypes, ``rename`` applied, index 0..N-1.

    ``strip_types`` drops a type suffix from each header name (``user_id:token`` -> ``user_id``,
    as in RecBole's atomic files), before ``rename``; the declaration states the kinds anyway.
    """
    opts = checked_options(given, READER_DEFAULTS, option)
    fmt = _file_format(path, opts["format"], option)
    frame = _read_parquet(path, opts, option) if fmt == "parquet" else _read_text(path, fmt, opts, option)
    frame = _as_declared(frame, opts, path, option)
    frame = _normalise_dtypes(frame).reset_index(drop=True)
    if opts["strip_types"]:
        frame = _rename(frame, {c: str(c).rsplit(":", 1)[0] for c in frame.columns if ":" in str(c)}, path,
                        f"{option}.strip_types")
    return _rename(frame, dict(opts["rename"] or {}), path, f"{option}.rename")


def iter_table(path: Path, given: Mapping | None, option: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The same file as :func:`read_table` gives, in chunks of ``chunk_rows`` rows, each indexed
    by its rows' numbers in the file, so a dataset larger than memory is read once, in order."""
    opts = checked_options(given, READER_DEFAULTS, option)
    fmt = _file_format(path, opts["format"], option)
    chunks = _parquet_chunks(path, opts, option, chunk_rows) if fmt == "parquet" else \
        _text_chunks(path, fmt, opts, option, chunk_rows)
    start = 0
    for frame in chunks:
        frame = _normalise_dtypes(_as_declared(frame, opts, path, option))
        frame.index = pd.RangeIndex(start, start + len(frame))
        start += len(frame)
        if opts["strip_types"]:
            frame = _rename(frame, {c: str(c).rsplit(":", 1)[0] for c in frame.columns if ":" in str(c)}, path,
                            f"{option}.strip_types")
        yield _rename(frame, dict(opts["rename"] or {}), path, f"{option}.rename")


def _parquet_chunks(path: Path, opts: Mapping, option: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    _read_parquet(path, opts, option, check_only=True)
    try:
        file = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # column chunks streamed, not whole
    except Exception as err:  # pyarrow raises its own error types for a damaged or foreign file
        raise SchemaError(
            f"{path}: not a readable parquet file ({one_line(err)}); check the file or {option}.format"
        ) from None
    _check_unique_names(list(file.schema_arrow.names), path, "its schema")
    for batch in file.iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def _text_chunks(path: Path, fmt: str, opts: Mapping, option: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    first = True
    reader = _read_text(path, fmt, opts, option, chunksize=chunk_rows)
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = next(reader)
        except StopIteration:
            return
        except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError) as err:
            raise SchemaError(f"{path}: cannot be parsed ({one_line(err)}); check the delimiter, the quoting, "
                              f"the encoding and {option}.names") from None
        if first and _looks_single_column(frame, opts):
            _check_delimiter(path, reader_sep(fmt, opts), opts["encoding"], option)
        first = False
        yield frame


def reader_sep(fmt: str, opts: Mapping) -> str:
    return opts["delimiter"] if opts["delimiter"] is not None else DEFAULT_DELIMITERS[fmt]


def _as_declared(frame: pd.DataFrame, opts: Mapping, path: Path, option: str) -> pd.DataFrame:
    """``text_columns`` as text and ``na_values`` as the only missing-value markers, whatever the
    format: identifiers with leading zeros (``00123``) or a literal ``NA`` (Namibia, a size) are
    then the same from CSV and from Parquet, where pandas' CSV defaults would turn them into
    ``123`` and a missing value."""
    for column in opts["text_columns"] or []:
        checked_column(frame, column, f"{option}.text_columns", str(path))
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    if opts["na_values"] is not None:
        markers = {str(v) for v in opts["na_values"]}
        for column in frame.columns:
            if frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype):
                frame[column] = frame[column].where(~frame[column].isin(markers), None)
    return frame


def _read_parquet(path: Path, opts: Mapping, option: str, check_only: bool = False) -> pd.DataFrame | None:
    for key in ("delimiter", "names"):
        if opts[key] is not None:
            raise SchemaError(f"{option}.{key} does not apply to the parquet file {path}; remove it (rename works)")
    if not opts["header"]:
        raise SchemaError(f"{option}.header: false does not apply to the parquet file {path}; remove it")
    if check_only:
        return None
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as err:  # pyarrow raises its own error types for a damaged or foreign file
        raise SchemaError(
            f"{path}: not a readable parquet file ({one_line(err)}); check the file or {option}.format"
        ) from None
    _check_unique_names(list(map(str, frame.columns)), path, "its schema")
    return frame


def _read_text(path: Path, fmt: str, opts: Mapping, option: str, chunksize: int | None = None) -> pd.DataFrame:
    """A CSV/TSV file with pandas' default type inference (what a user sees in a notebook).

    ``index_col=False`` stops pandas from silently turning a first column into the index when
    rows have one field more than the header; that mismatch, like any other, is an error here.
    """
    sep = reader_sep(fmt, opts)
    if not opts["header"] and not opts["names"]:
        raise SchemaError(f"{option}.header: false needs {option}.names (the column names in file order) for {path}")
    if opts["names"]:
        _check_unique_names(list(map(str, opts["names"])), path, f"{option}.names")
    elif opts["header"]:
        _check_unique_names(_header_cells(path, sep, opts["encoding"]), path, "its header")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep=sep,
                header=0 if opts["header"] else None,
                names=list(opts["names"]) if opts["names"] else None,
                index_col=False,
                encoding=opts["encoding"],
                dtype={c: str for c in opts["text_columns"] or []} or None,
                # na_values given: only those strings (and empty cells) are missing, not pandas' defaults
                keep_default_na=opts["na_values"] is None,
                na_values=[str(v) for v in opts["na_values"]] + [""] if opts["na_values"] is not None else None,
                chunksize=chunksize,
            )
            if chunksize is not None:
                return frame  # a reader: its chunks are parsed (and their errors raised) as they are read
    except UnicodeDecodeError as err:
        raise SchemaError(
            f"{path}: not readable as {opts['encoding']} ({one_line(err)}); set {option}.encoding (e.g. latin-1)"
        ) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError) as err:
        _check_delimiter(path, sep, opts["encoding"], option)
        raise SchemaError(
            f"{path}: cannot be parsed with {option}.delimiter {sep!r} ({one_line(err)}); check the delimiter, "
            f"the quoting and {option}.names"
        ) from None
    except (OSError, EOFError, zlib.error, ImportError, ValueError) as err:
        raise SchemaError(f"{path}: cannot be read ({one_line(err)}); check the file and its compression") from None
    if _looks_single_column(frame, opts):
        _check_delimiter(path, sep, opts["encoding"], option)
    return frame


def _header_cells(path: Path, sep: str, encoding: str) -> list[str]:
    """The header as written: pandas renames a repeated name (``price``, ``price.1``) when it reads
    it as a header, which would hide that two columns claim the same name."""
    try:
        cells = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, encoding=encoding, index_col=False,
                            keep_default_na=False)
    except Exception:  # an unreadable header: the full read names the problem
        return []
    return [str(c) for c in cells.iloc[0].tolist()] if len(cells) else []


def _check_unique_names(names: list[str], path: Path, where: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen and name != "":
            raise SchemaError(
                f"{path}: column {name!r} appears twice in {where} (columns {seen[name]} and {position}, from 0); "
                f"rename or drop one, so each column has its own name"
            )
        seen[name] = position


def _looks_single_column(frame: pd.DataFrame, opts: Mapping) -> bool:
    if opts["header"]:
        return frame.shape[1] == 1
    return frame.shape[1] > 1 and len(frame) > 0 and bool(frame.iloc[:, 1:].isna().all().all())


def _check_delimiter(path: Path, sep: str, encoding: str, option: str) -> None:
    """Raise when the first line holds another likely delimiter (a TSV read as CSV, …)."""
    line = _first_line(path, encoding)
    counts = {d: line.count(d) for d in LIKELY_DELIMITERS if d != sep}
    best = max(counts, key=counts.__getitem__) if counts else None
    if best is not None and counts[best] > 0:
        raise SchemaError(
            f"{path}: {option}.delimiter {sep!r} gives a single column, but the first line {line[:60]!r} looks "
            f"{LIKELY_DELIMITERS[best]}-separated; set {option}.delimiter: {_yaml_string(best)}"
        )


def _first_line(path: Path, encoding: str) -> str:
    """The first line, through pandas so every compression it reads is handled (an unused
    separator and no quoting make the whole line one cell)."""
    try:
        cell = pd.read_csv(
            path, sep="\x1e", header=None, nrows=1, engine="python", quoting=csv.QUOTE_NONE,
            encoding=encoding, dtype=str, keep_default_na=False,
        ).iloc[0, 0]  # fmt: skip
    except Exception:  # an unreadable first line: no hint, the caller's error stands
        return ""
    return str(cell)


def _yaml_string(text: str) -> str:
    return '"\\t"' if text == "\t" else f'"{text}"'


def _normalise_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Integers as int64 (float64 when a value is missing, as a CSV read gives them), floats as
    float64, category-coded and nullable columns as plain ones: Parquet keeps whatever the
    writer used (int32, Int64, dictionary-coded strings), CSV never does."""
    if not len(frame.columns):
        return frame
    return pd.concat([_normalise_column(frame.iloc[:, i]) for i in range(frame.shape[1])], axis=1)


def _normalise_column(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(s.cat.categories.dtype) if s.notna().all() else s.astype(object).infer_objects()
    if ptypes.is_bool_dtype(s.dtype):
        return s.astype("float64") if s.isna().any() else s.astype(bool)
    if ptypes.is_integer_dtype(s.dtype):
        return s.astype("float64") if s.isna().any() else s.astype("int64")
    if ptypes.is_float_dtype(s.dtype):
        return s.astype("float64")
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is pd.NA:
        return s.astype("str")
    if s.dtype == object and s.isna().all():
        return s.astype("float64")
    return s


def _rename(frame: pd.DataFrame, rename: dict, path: Path, option: str) -> pd.DataFrame:
    """``option`` is the option that asked for the renaming (``….rename`` or ``….strip_types``)."""
    for raw in rename:
        checked_column(frame, raw, option, str(path))
    frame = frame.rename(columns=rename)
    dup = sorted({str(c) for c in frame.columns if list(frame.columns).count(c) > 1})
    if dup:
        raise SchemaError(f"{path}: column name(s) {dup} appear twice (after {option}); rename one of them")
    return frame
