"""The declarative description of a dataset: which columns are features, which are tasks.

Every dataset (built-in or declared in YAML) produces the same :class:`Schema`, so architectures,
losses and metrics never look at a dataset's raw columns. The leakage guard lives here: a task's
label column, its mask column, the raw column a derived label was computed from, or a column the
dataset declares excluded can never be a feature.

Feature kinds are open: a kind is a name registered by its column transformer
(:mod:`mtlrec.data.columns`), which also validates the kind's options. Nothing here lists kinds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

TaskKindName = Literal["binary", "multiclass", "multilabel", "regression"]
TASK_KINDS = ("binary", "multiclass", "multilabel", "regression")


class SchemaError(ValueError):
    """A dataset declaration that cannot be trained on safely (names the column and the fix)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One input column: its name, its kind (``categorical``, ``numeric``, ``multi_hot``,
    ``text``, …) and the kind's options (e.g. ``{"log1p": True}`` for a heavy-tailed numeric,
    ``{"separator": "|"}`` for a tag list). The kind's transformer checks the options."""

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mtlrec.data.columns import transformer_class  # the registry of kinds

        object.__setattr__(self, "options", dict(self.options))
        transformer_class(self.kind, feature=self.name).check_options(self.name, self.options)


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target.

    ``mask`` names a 0/1 column restricting the task's loss and metrics to its own sample space
    (e.g. conversion only where click = 1). ``classes``: the class names of a multiclass task
    (labels are matched by value, so a label outside them is an error) or the tags of a multilabel
    task (when omitted, the tags are the ones seen in training). A multiclass task without
    ``classes`` takes integer labels in ``[0, num_classes)``. ``separator`` splits a multilabel
    cell into tags (an empty cell means "no tag"). ``source``: the raw column a derived label was computed from (never a feature).
    ``sample_space``: a name for the rows the task's loss and metrics are on (``impressions``,
    ``clicked``), carried into every metric key (``val/cvr/auc@clicked``) and the report, so a CVR
    AUC on clicked rows is never read as one on impressions. ``None``: the mask column's name for a
    masked task (``auc@click``), and no suffix for a task on every row.
    """

    name: str
    kind: TaskKindName
    label: str
    num_classes: int | None = None
    mask: str | None = None
    output_dim: int = 1  # >1 only for vector regression (e.g. the GradNorm toy)
    classes: tuple[str, ...] | None = None
    separator: str = "|"
    source: str | None = None
    sample_space: str | None = None
    log1p: bool = False  # regression only: fit log(1 + y) (play time, spend), so MSE is not ruled by the tail

    def __post_init__(self) -> None:
        if self.log1p and self.kind != "regression":
            raise SchemaError(f"task {self.name!r}: log1p only applies to regression tasks")
        space = self.sample_space
        if space is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", str(space)):
            raise SchemaError(
                f"task {self.name!r}: sample_space {space!r} must be a plain name (letters, digits, _ . -), "
                f"e.g. clicked"
            )
        if self.kind not in TASK_KINDS:
            raise SchemaError(
                f"task {self.name!r}: kind {self.kind!r} is not supported; use one of {', '.join(TASK_KINDS)}"
            )
        if self.classes is not None:
            classes = tuple(str(c) for c in self.classes)
            if len(set(classes)) != len(classes):
                raise SchemaError(f"task {self.name!r}: classes listed twice in {list(classes)}")
            if self.num_classes is not None and self.num_classes != len(classes):
                raise SchemaError(
                    f"task {self.name!r}: num_classes={self.num_classes} but {len(classes)} classes are listed; "
                    f"give one of the two"
                )
            object.__setattr__(self, "classes", classes)
            object.__setattr__(self, "num_classes", len(classes))
        if self.kind == "multiclass" and (self.num_classes is None or self.num_classes < 2):
            raise SchemaError(f"task {self.name!r}: a multiclass task needs classes (or num_classes) with >= 2 entries")
        if self.kind == "multilabel" and self.classes is not None and len(self.classes) < 1:
            raise SchemaError(f"task {self.name!r}: a multilabel task needs at least one tag in classes")
        if self.kind not in ("multiclass", "multilabel") and self.classes is not None:
            raise SchemaError(f"task {self.name!r}: classes only apply to multiclass and multilabel tasks")

    @property
    def space(self) -> str | None:
        """The sample-space name used in metric keys (see ``sample_space``)."""
        return self.sample_space or self.mask

    def metric_key(self, split: str, metric: str) -> str:
        """``"val/cvr/auc@clicked"``: split, task, metric and the rows it was computed on."""
        return f"{split}/{self.name}/{metric}" + (f"@{self.space}" if self.space else "")

    @property
    def logit_dim(self) -> int:
        """Width of the task head's output (a multilabel task's tags must be known: see
        :meth:`Schema.with_fitted_tasks`)."""
        if self.kind in ("multiclass", "multilabel"):
            if self.num_classes is None:
                raise SchemaError(f"task {self.name!r}: its tags are not known until the preprocessing is fit")
            return self.num_classes
        return self.output_dim


@dataclass(frozen=True)
class Schema:
    """Features, tasks, the main task (used for model selection) and the excluded columns."""

    features: tuple[FeatureSpec, ...]
    tasks: tuple[TaskSpec, ...]
    main_task: str
    excluded: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "excluded", tuple(self.excluded))
        self.validate()

    # -- views -------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def of_kind(self, kind: str) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == kind]

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SchemaError(f"unknown task {name!r}; tasks are {self.task_names}")

    def with_fitted_tasks(self, tasks: Mapping[str, TaskSpec]) -> "Schema":
        """The same schema with some tasks replaced by their fitted form (e.g. tags learned from
        training); the fitted schema is what a run saves and what architectures are built from."""
        return replace(self, tasks=tuple(tasks.get(t.name, t) for t in self.tasks))

    @property
    def forbidden_feature_columns(self) -> dict[str, str]:
        """Column -> why it may not be a feature (labels, masks, label sources, declared exclusions)."""
        why: dict[str, str] = {c: "declared excluded by the dataset" for c in self.excluded}
        for t in self.tasks:
            if t.source:
                why[t.source] = f"column the label of task {t.name!r} is derived from"
            why[t.label] = f"label of task {t.name!r}"
            if t.mask:
                why[t.mask] = f"sample mask of task {t.name!r}"
        return why

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data (saved as ``schema.json`` with each run, so the run can score new files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Schema":
        def feature(f: dict) -> FeatureSpec:
            f = dict(f)
            options = dict(f.pop("options", {}) or {})
            if f.pop("log1p", False):  # schema.json written before feature options existed
                options["log1p"] = True
            return FeatureSpec(f["name"], f["kind"], options)

        def task(t: dict) -> TaskSpec:
            t = dict(t)
            if t.get("classes") is not None:
                t["classes"] = tuple(t["classes"])
            return TaskSpec(**t)

        return cls(
            features=tuple(feature(f) for f in data["features"]),
            tasks=tuple(task(t) for t in data["tasks"]),
            main_task=data["main_task"],
            excluded=tuple(data.get("excluded", ())),
        )

    # -- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        if not self.tasks:
            raise SchemaError("a schema needs at least one task")
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"feature columns listed twice: {dup}")
        tnames = self.task_names
        if len(set(tnames)) != len(tnames):
            raise SchemaError(f"task names must be unique, got {tnames}")
        if self.main_task not in tnames:
            raise SchemaError(f"main_task {self.main_task!r} is not a task; choose one of {tnames}")
        forbidden = self.forbidden_feature_columns
        for f in self.features:
            if f.name in forbidden:
                raise SchemaError(
                    f"leakage guard: column {f.name!r} is the {forbidden[f.name]} and cannot be a feature; "
                    f"remove it from the feature list"
                )
