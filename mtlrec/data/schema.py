"""The declarative description of a dataset: which columns are features, which are tasks.

Every dataset (built-in or user-declared) produces the same :class:`Schema`, so architectures,
losses and metrics never look at a dataset's raw columns. The leakage guard lives here: a task's
label column, its mask column, or a column the dataset declares excluded can never be a feature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

FeatureKind = Literal["categorical", "numeric"]
TaskKindName = Literal["binary", "multiclass", "regression"]


class SchemaError(ValueError):
    """A dataset declaration that cannot be trained on safely (names the column and the fix)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One input column.

    ``log1p`` applies ``sign(x)·log(1+|x|)`` before standardisation: heavy-tailed money columns
    (capital gains, dividends) otherwise squash every other value into one bin.
    """

    name: str
    kind: FeatureKind
    log1p: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "numeric"):
            raise SchemaError(
                f"feature {self.name!r}: kind {self.kind!r} is not supported; use 'categorical' or 'numeric'"
            )


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target.

    ``mask`` names a 0/1 column restricting the task's loss and metrics to its own sample space
    (e.g. conversion only where click = 1). ``num_classes`` is required for multiclass tasks.
    """

    name: str
    kind: TaskKindName
    label: str
    num_classes: int | None = None
    mask: str | None = None
    output_dim: int = 1  # >1 only for vector regression (e.g. the GradNorm toy)

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "multiclass", "regression"):
            raise SchemaError(
                f"task {self.name!r}: kind {self.kind!r} is not supported; use binary, multiclass or regression"
            )
        if self.kind == "multiclass" and (self.num_classes is None or self.num_classes < 2):
            raise SchemaError(f"task {self.name!r}: a multiclass task needs num_classes >= 2")

    @property
    def logit_dim(self) -> int:
        """Width of the task head's output."""
        return self.num_classes if self.kind == "multiclass" else self.output_dim


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

    @property
    def categorical(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "categorical"]

    @property
    def numeric(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "numeric"]

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SchemaError(f"unknown task {name!r}; tasks are {self.task_names}")

    @property
    def forbidden_feature_columns(self) -> dict[str, str]:
        """Column -> why it may not be a feature (labels, masks, declared exclusions)."""
        why: dict[str, str] = {c: "declared excluded by the dataset" for c in self.excluded}
        for t in self.tasks:
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
        return cls(
            features=tuple(FeatureSpec(**f) for f in data["features"]),
            tasks=tuple(TaskSpec(**t) for t in data["tasks"]),
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
