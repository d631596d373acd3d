"""Scoring new data with a run trained on token features (multi-hot genres, a text title): tokens go
through the vocabulary saved with the run, an unseen word or tag is the out-of-vocabulary id, and
the scores equal the trained model's outputs on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrec.build import build_architecture, build_datamodule
from mtlrec.data.columns.tokens import FIRST_TOKEN_ID, OOV, PAD
from mtlrec.data.datamodule import PREPROCESSOR_FILE
from mtlrec.predict import RunScorer
from tests.cli.test_bring_your_own_data import DATASET_YAML, write_movies
from tests.conftest import train_in_process

LABELS = ["rating", "like", "interests"]


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    write_movies(base / "data")
    (base / "conf" / "data").mkdir(parents=True)
    (base / "conf" / "data" / "movies.yaml").write_text(DATASET_YAML.format(root=base / "data"))
    run_dir = base / "run"
    overrides = [f"hydra.searchpath=[file://{base / 'conf'}]", "data=movies", "arch=shared_bottom",
                 "trainer.max_epochs=2", "logger=none", "print_results=false"]
    record, cfg = train_in_process(run_dir, overrides)
    return run_dir, record, cfg


def test_text_and_tags_map_through_the_saved_vocabulary(token_run) -> None:
    run_dir, _, _ = token_run
    saved = json.loads((run_dir / PREPROCESSOR_FILE).read_text())["columns"]
    title_vocab, genre_vocab = saved["title"]["state"]["vocabulary"], saved["genre"]["state"]["vocabulary"]
    pre = RunScorer(run_dir).preprocessor
    frame = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "gender": ["F"], "age": [30.0],
                          "genre": ["comedy zzz-unseen-genre"], "title": ["Night ZZZUNSEEN night"]})
    table = pre.transform(frame, with_labels=False)
    night = FIRST_TOKEN_ID + title_vocab.index("night")
    # lower-cased, in order, unseen word -> OOV
    assert table.features["title"][0].tolist() == [night, OOV, night]
    genres = table.features["genre"][0].tolist()
    assert genres == [FIRST_TOKEN_ID + genre_vocab.index("comedy"), OOV]


def test_scores_equal_the_trained_models_outputs(token_run) -> None:
    run_dir, record, cfg = token_run
    dm = build_datamodule(cfg)
    frame = dm.raw.splits["test"].drop(columns=LABELS)  # no label needed to score
    scores = RunScorer(run_dir).predict(frame, batch_size=29)
    model = build_architecture(cfg, dm.schema, dm.preprocessor)
    state = torch.load(run_dir / record["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("architecture."): v for k, v in state.items() if k.startswith("architecture.")})
    model.eval()
    with torch.no_grad():
        logits = model(dm.tables["test"][slice(0, len(frame))]).logits
    np.testing.assert_allclose(scores["like"], torch.sigmoid(logits["like"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(scores["stars"], torch.softmax(logits["stars"], -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(scores["interests"], torch.sigmoid(logits["interests"]).numpy(), atol=1e-6)
    assert scores["interests"].shape == (len(frame), 4)
