"""Schema declarations: the leakage guard and the other checks, with messages naming the column."""

from __future__ import annotations

import pytest

from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec

TASKS = (
    TaskSpec("ctr", "binary", "click"),
    TaskSpec("cvr", "binary", "buy", mask="clicked_mask"),
    TaskSpec("kind", "multiclass", "kind_label", num_classes=3),
)
FEATURES = (FeatureSpec("color", "categorical"), FeatureSpec("age", "numeric"))


def _schema(extra_features=(), **kwargs) -> Schema:
    args = dict(features=FEATURES + tuple(extra_features), tasks=TASKS, main_task="ctr", excluded=("user_id",))
    args.update(kwargs)
    return Schema(**args)


def test_valid_schema_views() -> None:
    s = _schema()
    assert s.task_names == ["ctr", "cvr", "kind"]
    assert [f.name for f in s.of_kind("categorical")] == ["color"]
    assert [f.name for f in s.of_kind("numeric")] == ["age"]
    assert s.task("kind").logit_dim == 3 and s.task("ctr").logit_dim == 1
    assert s.forbidden_feature_columns == {
        "user_id": "declared excluded by the dataset",
        "click": "label of task 'ctr'",
        "buy": "label of task 'cvr'",
        "clicked_mask": "sample mask of task 'cvr'",
        "kind_label": "label of task 'kind'",
    }
    assert isinstance(s.features, tuple) and isinstance(s.excluded, tuple)


@pytest.mark.parametrize(
    "column,kind,why",
    [
        ("click", "numeric", "label of task 'ctr'"),
        ("kind_label", "categorical", "label of task 'kind'"),
        ("clicked_mask", "numeric", "sample mask of task 'cvr'"),
        ("user_id", "categorical", "declared excluded by the dataset"),
    ],
)
def test_leakage_guard_names_the_column(column: str, kind: str, why: str) -> None:
    with pytest.raises(SchemaError) as err:
        _schema(extra_features=[FeatureSpec(column, kind)])
    msg = str(err.value)
    assert f"column {column!r}" in msg
    assert why in msg
    assert "leakage guard" in msg and "remove it from the feature list" in msg


def test_leakage_guard_with_list_inputs() -> None:
    """Lists (as Hydra hands them over) are guarded just like tuples."""
    with pytest.raises(SchemaError, match="'click'"):
        Schema(features=[FeatureSpec("click", "numeric")], tasks=list(TASKS), main_task="ctr")


def test_schema_error_is_a_value_error() -> None:
    assert issubclass(SchemaError, ValueError)


def test_other_declaration_errors() -> None:
    with pytest.raises(SchemaError, match="at least one task"):
        Schema(features=FEATURES, tasks=(), main_task="ctr")
    with pytest.raises(SchemaError, match=r"listed twice: \['age'\]"):
        _schema(extra_features=[FeatureSpec("age", "numeric")])
    with pytest.raises(SchemaError, match="task names must be unique"):
        Schema(features=FEATURES, tasks=(TaskSpec("a", "binary", "x"), TaskSpec("a", "binary", "y")), main_task="a")
    with pytest.raises(SchemaError, match="main_task 'nope' is not a task"):
        _schema(main_task="nope")
    with pytest.raises(SchemaError, match="unknown task 'nope'"):
        _schema().task("nope")


def test_spec_errors_name_the_column() -> None:
    with pytest.raises(SchemaError, match="feature 'age': kind 'float'"):
        FeatureSpec("age", "float")
    with pytest.raises(SchemaError, match="task 't': kind 'ranking'"):
        TaskSpec("t", "ranking", "y")
    with pytest.raises(SchemaError, match=r"task 'm': a multiclass task needs classes \(or num_classes\) with >= 2 entries"):
        TaskSpec("m", "multiclass", "y")
    with pytest.raises(SchemaError, match=r"num_classes\) with >= 2 entries"):
        TaskSpec("m", "multiclass", "y", num_classes=1)
    assert TaskSpec("v", "regression", "y", output_dim=4).logit_dim == 4
