"""The schema of a declared dataset, built from the YAML lists of features and tasks.

It is built before any file is read, so a declaration error comes fast. **Leakage stays
impossible:** a derived label's source column, the split column and declared exclusions go to
the schema, whose leakage guard refuses them as features; its refusal names the file(s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtlrec.data.messages import one_line
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec
from mtlrec.data.tabular.options import checked_entry

TASK_KEYS = ("name", "kind", "label", "num_classes", "mask", "output_dim", "classes", "separator",
             "sample_space", "log1p")


def _feature_specs(features: object) -> list[FeatureSpec]:
    if not isinstance(features, Mapping) or not any(features.values()):
        raise SchemaError(
            f"data.features: expected lists of columns by kind, e.g. {{categorical: [user_id], numeric: [price]}}, "
            f"got {features!r}"
        )
    specs = []
    for kind, entries in features.items():
        if not isinstance(entries, (list, tuple)):
            raise SchemaError(f"data.features.{kind}: expected a list of columns, got {entries!r}")
        specs += [_feature(kind, entry, f"data.features.{kind}[{j}]") for j, entry in enumerate(entries)]
    return specs


def _feature(kind: str, entry: object, option: str) -> FeatureSpec:
    """A column name, or ``{name: column, <options of the kind>}``."""
    if isinstance(entry, Mapping) and entry.get("name") is not None:
        name, options = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    elif isinstance(entry, str):
        name, options = entry, {}
    else:
        raise SchemaError(f"{option}: expected a column name or {{name: column, <options>}}, got {entry!r}")
    try:
        return FeatureSpec(str(name), str(kind), options)
    except SchemaError as err:
        raise SchemaError(f"{option}: {err}") from None


def _task_specs(tasks: object, sources: Mapping[str, str]) -> list[TaskSpec]:
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise SchemaError(f"data.tasks: expected a list of {{name, kind, label, ...}} entries, got {tasks!r}")
    return [_task(entry, f"data.tasks[{i}]", sources) for i, entry in enumerate(tasks)]


def _task(entry: object, option: str, sources: Mapping[str, str]) -> TaskSpec:
    """A task entry; ``label`` defaults to the task's name, ``source`` is set for a derived label."""
    spec = checked_entry(entry, TASK_KEYS, ("name", "kind"), option)
    spec.setdefault("label", spec["name"])
    if spec.get("classes") is not None:
        spec["classes"] = tuple(spec["classes"])
    try:
        return TaskSpec(**spec, source=sources.get(spec["label"]))
    except (SchemaError, TypeError) as err:
        raise SchemaError(f"{option}: {one_line(err)}") from None


def used_columns(schema: Schema, split: Mapping[str, Any], exclude: Sequence[str]) -> list[tuple[str, str]]:
    """(option, column) for every column the declaration names in the interactions."""
    used = [(f"data.features.{f.kind}", f.name) for f in schema.features]
    for i, t in enumerate(schema.tasks):
        used += [(f"data.tasks[{i}].label", t.label)] + ([(f"data.tasks[{i}].mask", t.mask)] if t.mask else [])
    used += [("data.exclude", c) for c in exclude]
    if split["kind"] in ("column", "time"):
        used.append(("data.split.column", split["column"]))
    return used


def build_schema(features, tasks, main_task, sources, excluded, paths) -> Schema:
    """The schema (built before the files are read, so a declaration error comes fast); the
    leakage guard's refusal names the file(s) it is about."""
    feature_specs, task_specs = _feature_specs(features), _task_specs(tasks, sources)
    try:
        return Schema(tuple(feature_specs), tuple(task_specs), str(main_task), excluded=excluded)
    except SchemaError as err:
        files = ", ".join(map(str, paths.values()))
        raise SchemaError(f"data ({files}): {err}") from None
