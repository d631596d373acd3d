"""The dataset YAML shown in the README works as written: it is cut out of README.md, given small
files of the shape it describes, composed through Hydra from a user's config folder, and built."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from mtlrec.build import build_datamodule
from mtlrec.train import CONFIG_DIR

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_yaml() -> str:
    match = re.search(r"```yaml\n(# my_conf/data/movies\.yaml\n.*?)```", README.read_text(), re.S)
    assert match, "README.md should show my_conf/data/movies.yaml"
    return match.group(1)


def write_files(root: Path, n: int = 300) -> None:
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2023-10-01") + pd.to_timedelta(rng.integers(0, 200, n), "D")
    clicked = rng.integers(0, 2, n)
    pd.DataFrame({
        "order_id": np.arange(n), "user_id": rng.integers(0, 20, n), "item_id": rng.integers(0, 15, n),
        "rating": rng.integers(1, 6, n), "timestamp": days.strftime("%Y-%m-%d"),
        "zip_code": rng.choice(["00123", "10001", "02139"], n),
        "user_tags": rng.choice(["sale|new", "sale", "new", ""], n),
        "clicked": clicked, "bought": clicked * rng.integers(0, 2, n),
    }).to_parquet(root / "ratings.parquet", index=False)
    pd.DataFrame({"user_id": range(20), "age": rng.integers(18, 70, 20), "gender": rng.choice(["F", "M"], 20)}
                 ).to_csv(root / "users.csv", index=False)
    pd.DataFrame({"item_id:token": range(15), "genres:token_seq": rng.choice(["drama|comedy", "kids", ""], 15),
                  "title:token_seq": rng.choice(["red dress", "blue shoes", "big bag"], 15),
                  "price:float": rng.uniform(5, 90, 15).round(2)}).to_csv(root / "items.tsv", sep="\t", index=False)


def test_the_readme_dataset_yaml_builds(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_files(data)
    conf = tmp_path / "my_conf" / "data"
    conf.mkdir(parents=True)
    (conf / "movies.yaml").write_text(readme_yaml().replace("root: /data/movies", f"root: {data}"))
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "data=movies"])
    dm = build_datamodule(cfg)
    assert dm.schema.task_names == ["like", "stars", "interests", "cvr"]
    assert set(dm.tables["train"].features) == {"categorical", "numeric", "genres", "title"}
    assert dm.schema.task("like").source == "rating" and "order_id" in dm.schema.excluded
    train_days = dm.raw.splits["train"]["timestamp"]
    assert train_days.max() < "2024-01-01" <= dm.raw.splits["val"]["timestamp"].min()
