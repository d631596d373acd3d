"""``init_from``: a target model starts from a source run. Tensors that match by name and shape
are copied exactly; the categorical table is remapped through the two vocabularies (a shop both
domains know keeps its vector, a new one keeps its fresh initialisation, never a neighbour's
vector); the weighting starts afresh; a source that matches nothing is refused in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrec.transfer.init_from import TransferError, initialise_from
from tests.conftest import build_in_process as _module
from tests.conftest import train_in_process

TASKS = "[{name: click, kind: binary}, {name: buy, kind: binary}]"


def _domain(folder, shops: list[str], seed: int):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", 600), ("val", 200), ("test", 200)):
        frame = pd.DataFrame({"shop": rng.choice(shops, n), "price": rng.normal(size=n),
                              "click": np.tile([0, 1], n // 2), "buy": np.tile([0, 0, 1, 1], n // 4)})
        frame.to_csv(folder / f"{split}.csv", index=False)
    return ["data=tabular", f"data.root={folder}", "data.files={train: train.csv, val: val.csv, test: test.csv}",
            "data.features={categorical: [shop], numeric: [price]}", f"data.tasks={TASKS}", "data.main_task=click",
            "arch=mmoe", "trainer.max_epochs=1", "console.progress_bar=false"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    overrides = _domain(root / "source-data", ["a", "b", "c"], seed=0)
    record, _ = train_in_process(root / "source-run", [*overrides, "weighting=uncertainty"])
    assert record["status"] == "complete"
    return root, root / "source-run"


def test_shared_categories_keep_their_vectors_and_new_ones_their_initialisation(source) -> None:
    root, run = source
    target = _domain(root / "target-data", ["b", "c", "d", "e"], seed=1)
    fresh, _ = _module(target)
    module, datamodule = _module(target)
    source_state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    report = initialise_from(module, datamodule.preprocessor, run)

    table = "architecture.encoder.layers.categorical.table.weight"
    source_vocab = ["a", "b", "c"]  # rows: 0 = OOV, then the sorted vocabulary
    target_vocab = datamodule.preprocessor.transformers["categorical"].vocabularies["shop"]
    assert target_vocab == ["b", "c", "d", "e"]
    got, was, init = module.state_dict()[table], source_state[table], fresh.state_dict()[table]
    assert torch.equal(got[0], was[0])  # out-of-vocabulary row
    for row, shop in enumerate(target_vocab, start=1):
        expected = was[1 + source_vocab.index(shop)] if shop in source_vocab else init[row]
        assert torch.equal(got[row], expected), shop
    assert report["remapped"] == {table: {"rows": 5, "from_source": 3, "new": 2}}
    # everything else of the architecture has the source's shape: copied exactly
    for name in report["loaded"]:
        assert torch.equal(module.state_dict()[name], source_state[name]), name
    assert len(report["loaded"]) > 10 and not report["skipped"]
    # the weighting's learned state is the source's tasks', not copied
    assert not any(n.startswith("weighting.") for n in report["loaded"])


def test_a_run_initialised_from_the_source_records_what_it_loaded(source, tmp_path) -> None:
    root, run = source
    target = _domain(tmp_path / "data", ["c", "d"], seed=2)
    record, _ = train_in_process(tmp_path / "run", [*target, f"init_from={run}"])
    assert record["status"] == "complete"
    assert record["init_from"]["source"].endswith("best.ckpt") and record["init_from"]["loaded"]
    assert record["init_from"]["remapped"]["architecture.encoder.layers.categorical.table.weight"]["from_source"] == 2


def test_a_source_that_matches_nothing_is_refused_in_one_line(tmp_path) -> None:
    small = ["data.num_train=300", "data.num_val=100", "data.num_test=100", "trainer.max_epochs=1"]
    other, _ = train_in_process(tmp_path / "synthetic-run", [*small, "arch=single_task"])
    assert other["status"] == "complete"
    module, datamodule = _module(_domain(tmp_path / "data", ["a", "b"], seed=3))
    with pytest.raises(TransferError, match=r"init_from=.*: no parameter of best-per-task.ckpt matches this model"):
        initialise_from(module, datamodule.preprocessor, tmp_path / "synthetic-run")
    with pytest.raises(TransferError, match="no such run folder or checkpoint file"):
        initialise_from(module, datamodule.preprocessor, tmp_path / "nowhere")
