"""Column transformers, one per feature kind, registered by kind name.

A new kind is one :class:`ColumnTransformer` subclass added to :data:`TRANSFORMERS` plus its
encoder layer in :mod:`mtlrec.models.inputs`; no other module lists kinds.
"""

from __future__ import annotations

from mtlrec.data.columns.base import ColumnTransformer
from mtlrec.data.columns.categorical import CategoricalColumns
from mtlrec.data.columns.image import ImageColumn
from mtlrec.data.columns.numeric import NumericColumns
from mtlrec.data.columns.tokens import MultiHotColumn, TextColumn
from mtlrec.data.schema import SchemaError

TRANSFORMERS: dict[str, type[ColumnTransformer]] = {
    cls.kind: cls for cls in (CategoricalColumns, NumericColumns, MultiHotColumn, TextColumn, ImageColumn)
}


def transformer_class(kind: str, feature: str = "?") -> type[ColumnTransformer]:
    try:
        return TRANSFORMERS[kind]
    except KeyError:
        raise SchemaError(
            f"feature {feature!r}: kind {kind!r} is not supported; use one of {', '.join(TRANSFORMERS)}"
        ) from None


__all__ = ["TRANSFORMERS", "ColumnTransformer", "transformer_class"]
