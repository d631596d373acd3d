"""AliExpress (MTReclib's four country sets): the generic tabular loader, with the country checked.

Everything else about the dataset is declared in ``conf/data/aliexpress.yaml``; only the country,
which picks the folder, needs a check of its own so that ``data.country=DE`` fails in one line
naming the four that exist instead of as a missing file.
"""

from __future__ import annotations

from typing import Any

from mtlrec.data.raw import RawDataset
from mtlrec.data.schema import SchemaError
from mtlrec.data.tabular import load_tabular

COUNTRIES = ("NL", "ES", "FR", "US")


def load_aliexpress(country: str = "NL", **declaration: Any) -> RawDataset:
    """The AliExpress set of one country (see ``conf/data/aliexpress.yaml``)."""
    _check(country)
    return load_tabular(**declaration)


def _stream(country: str = "NL", **declaration: Any):
    _check(country)
    return load_tabular.stream(**declaration)


def _check(country: str) -> None:
    if str(country).upper() not in COUNTRIES:
        raise SchemaError(f"data.country={country!r}: AliExpress comes in {', '.join(COUNTRIES)}; choose one of them")


load_aliexpress.stream = _stream  # type: ignore[attr-defined]  # out of core: mtlrec.build
