"""``data=womens_reviews`` declares what its README and config say: the tasks and their classes,
the text and numeric inputs, and no label, label source or item identifier among the inputs.
Runs on the synthetic file in the real one's format, and on the real file when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule
from mtlrec.train import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "womens_reviews"
REAL = REPO.parent / "shared" / "data" / "womens-ecommerce-reviews"
LABEL_COLUMNS = {"recommended", "rating", "department"}
EXCLUDED = {"clothing_id", "division", "class_name"}


def _datamodule(root: Path):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["data=womens_reviews", f"data.root={root}"])
    return build_datamodule(cfg)


def test_the_schema_is_the_declared_one() -> None:
    dm = _datamodule(FIXTURE)
    schema = dm.schema
    assert {(t.name, t.kind, t.label) for t in schema.tasks} == {
        ("recommend", "binary", "recommended"), ("rating", "multiclass", "rating"),
        ("department", "multiclass", "department")}  # fmt: skip
    assert schema.main_task == "recommend"
    assert schema.task("rating").classes == ("1", "2", "3", "4", "5")
    assert schema.task("department").classes == ("Bottoms", "Dresses", "Intimate", "Jackets", "Tops", "Trend")
    kinds = {f.name: f.kind for f in schema.features}
    assert kinds == {"age": "numeric", "positive_feedback": "numeric", "review_text": "text", "title": "text"}
    assert not (set(kinds) & (LABEL_COLUMNS | EXCLUDED))
    assert EXCLUDED <= set(schema.excluded)
    assert LABEL_COLUMNS <= set(schema.forbidden_feature_columns)
    # rows without a department are dropped (the fixture has two, like the real file's 14)
    assert sum(len(t) for t in dm.tables.values()) == 398


@pytest.mark.skipif(not REAL.exists(), reason=f"the real file is not in {REAL} (see ../shared/data/README.md)")
def test_the_real_file_gives_the_documented_split() -> None:
    dm = _datamodule(REAL)
    assert {s: len(t) for s, t in dm.tables.items()} == {"train": 18778, "val": 2347, "test": 2347}
    assert dm.preprocessor.transformers["review_text"].encoder_args() == {"num_embeddings": 6010}
