"""The input side: per-kind encoder layers against hand computations, and the encoder built from a
fitted preprocessing (layout, widths, independence of copies)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import FeatureSpec, Schema, TaskSpec
from mtlrec.data.table import Batch
from mtlrec.models.inputs.categorical import CategoricalEmbedding
from mtlrec.models.inputs.encoder import InputEncoder, build_encoder
from mtlrec.models.inputs.lookup import lookup
from mtlrec.models.inputs.numeric import NumericInput
from mtlrec.models.inputs.token_bag import TokenBag


def test_categorical_embedding_is_one_fused_table() -> None:
    torch.manual_seed(7)
    emb = CategoricalEmbedding([3, 4], embedding_dim=5)
    assert emb.output_dim == 10 and emb.table.num_embeddings == 7
    out = emb(torch.tensor([[0, 3], [2, 6]]))
    W = emb.table.weight
    torch.testing.assert_close(out[0], torch.cat([W[0], W[3]]))
    torch.testing.assert_close(out[1], torch.cat([W[2], W[6]]))
    with pytest.raises(ValueError, match="embedding_dim must be >= 1"):
        CategoricalEmbedding([2], embedding_dim=0)


def test_lookup_gives_nn_embeddings_values_and_gradients() -> None:
    """The CPU lookup's index_add backward (mtlrec.models.inputs.lookup) is the dense backward's sum:
    repeated ids included, second order included, and under vmap (seed stacking) too."""
    torch.manual_seed(0)
    ids = torch.randint(0, 7, (64, 5))  # 320 lookups into 7 rows: every row repeats
    weight = torch.randn(7, 3, requires_grad=True)
    upstream = torch.randn(64, 5, 3)
    (ours,) = torch.autograd.grad(lookup(weight, ids), weight, upstream)
    (reference,) = torch.autograd.grad(torch.nn.functional.embedding(ids, weight), weight, upstream)
    torch.testing.assert_close(ours, reference)
    second = []  # a gradient that depends on the weight (its rows squared), differentiated again
    for embed in (lookup, lambda w, i: torch.nn.functional.embedding(i, w)):
        (first,) = torch.autograd.grad((embed(weight, ids) ** 2 * upstream).sum(), weight, create_graph=True)
        second.append(torch.autograd.grad((first ** 2).sum(), weight)[0])
    torch.testing.assert_close(*second)

    # under vmap (lookup's own rule: one lookup into the seeds' tables side by side): 3 seeds'
    # tables with the same ids, with their own ids, and one table with 3 seeds' ids
    stacked = torch.randn(3, 7, 3, requires_grad=True)
    seed_ids = torch.randint(0, 7, (3, 64, 5))
    embedding = torch.nn.functional.embedding
    cases = [((stacked, ids), (0, None), lambda k: (ids, stacked[k])),
             ((stacked, seed_ids), (0, 0), lambda k: (seed_ids[k], stacked[k])),
             ((weight, seed_ids), (None, 0), lambda k: (seed_ids[k], weight))]
    for args, in_dims, alone_args in cases:
        table = args[0]
        rows = torch.func.vmap(lookup, in_dims=in_dims)(*args)
        assert type(rows.grad_fn).__name__ == "_IndexAddLookupBackward"  # its own rule, not F.embedding's
        (batched,) = torch.autograd.grad((rows * upstream).sum(), table)
        reference = torch.stack([embedding(*alone_args(k)) for k in range(3)])
        torch.testing.assert_close(rows, reference)
        (alone,) = torch.autograd.grad((reference * upstream).sum(), table)
        torch.testing.assert_close(batched, alone)


@pytest.mark.parametrize("mode", ["mean", "sum", "max"])
def test_token_bag_pools_only_real_tokens(mode) -> None:
    torch.manual_seed(0)
    bag = TokenBag(6, embedding_dim=3, mode=mode)
    W = bag.bag.weight.detach()
    assert torch.equal(W[0], torch.zeros(3))  # padding row
    ids = torch.tensor([[2, 5, 0, 0], [3, 0, 0, 0], [1, 4, 4, 2], [0, 0, 0, 0]])
    out = bag(ids)
    pool = {"mean": lambda r: r.mean(0), "sum": lambda r: r.sum(0), "max": lambda r: r.max(0).values}[mode]
    expected = [pool(W[[2, 5]]), pool(W[[3]]), pool(W[[1, 4, 4, 2]]), torch.zeros(3)]  # empty row -> 0
    torch.testing.assert_close(out, torch.stack(expected))


def test_token_bag_padding_gets_no_gradient() -> None:
    bag = TokenBag(5, embedding_dim=2)
    bag(torch.tensor([[2, 0], [0, 0]])).sum().backward()
    grad = bag.bag.weight.grad
    assert torch.equal(grad[0], torch.zeros(2)) and grad[2].abs().sum() > 0


def _schema() -> Schema:
    return Schema(
        features=(
            FeatureSpec("tags", "multi_hot"),
            FeatureSpec("age", "numeric"),
            FeatureSpec("review", "text", {"min_count": 1}),
            FeatureSpec("shop", "categorical"),
        ),
        tasks=(TaskSpec("y", "binary", "y"),),
        main_task="y",
    )


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "tags": ["a|b", "", "b", None], "age": [20.0, 30.0, 40.0, 50.0],
        "review": ["Nice dress", "nice", "too small", ""], "shop": ["x", "y", "x", "z"], "y": [1, 0, 1, 0],
    })


def test_encoder_layout_is_by_kind_then_schema_order_and_matches_its_layers() -> None:
    pre = Preprocessor(_schema()).fit(_frame())
    assert list(pre.transformers) == ["categorical", "numeric", "tags", "review"]
    torch.manual_seed(0)
    enc = build_encoder(pre, embedding_dim=3, kinds={"text": {"embedding_dim": 5, "mode": "sum"}})
    assert enc.output_dim == 3 + 1 + 3 + 5
    table = pre.transform(_frame())
    batch = table[torch.arange(4)]
    out = enc(batch)
    layers = enc.layers
    parts = [layers["categorical"](batch.features["categorical"]), batch.features["numeric"],
             layers["tags"](batch.features["tags"]), layers["review"](batch.features["review"])]
    torch.testing.assert_close(out, torch.cat(parts, dim=1))
    assert layers["review"].bag.mode == "sum"


def test_encoder_rejects_unknown_kind_options() -> None:
    pre = Preprocessor(_schema()).fit(_frame())
    with pytest.raises(ValueError, match="encoder.kinds: unknown feature kind"):
        build_encoder(pre, kinds={"video": {}})
    with pytest.raises(ValueError, match="encoder.kinds.text"):
        build_encoder(pre, kinds={"text": {"pooling": "mean"}})


def test_fresh_copy_has_same_structure_and_new_weights() -> None:
    pre = Preprocessor(_schema()).fit(_frame())
    enc = build_encoder(pre)
    twin = enc.fresh_copy()
    assert twin.output_dim == enc.output_dim and twin.keys == enc.keys
    assert not torch.equal(twin.layers["categorical"].table.weight, enc.layers["categorical"].table.weight)
    assert twin.layers["tags"].bag.weight.data_ptr() != enc.layers["tags"].bag.weight.data_ptr()


def test_numeric_only_encoder_and_empty_encoder() -> None:
    enc = InputEncoder({"numeric": NumericInput(3)})
    x = torch.randn(4, 3)
    assert torch.equal(enc(Batch({"numeric": x}, num_rows=4)), x)
    with pytest.raises(ValueError, match="no features"):
        InputEncoder({})


def test_feature_names_that_are_module_attributes_or_hold_dots_work() -> None:
    schema = Schema(
        features=(FeatureSpec("items", "multi_hot"), FeatureSpec("values", "text", {"min_count": 1}),
                  FeatureSpec("shop.name", "multi_hot")),
        tasks=(TaskSpec("y", "binary", "y"),),
        main_task="y",
    )
    frame = pd.DataFrame({"items": ["a|b", "b"], "values": ["good", "bad"], "shop.name": ["x", "y"], "y": [0, 1]})
    pre = Preprocessor(schema).fit(frame)
    enc = build_encoder(pre, embedding_dim=2)
    assert enc.keys == ["items", "shop.name", "values"] and enc.output_dim == 6
    assert tuple(enc(pre.transform(frame)[slice(0, 2)]).shape) == (2, 6)
    assert {"layers.items_.bag.weight", "layers.shop_name.bag.weight"} <= set(enc.state_dict())


def test_encoder_converts_its_output_to_autocasts_dtype_once() -> None:
    """Under autocast the encoded input leaves the encoder in bf16 (each first layer would convert
    it otherwise, once per reader); gradients still reach the embeddings in float32, and outside
    autocast the output stays float32."""
    from pathlib import Path

    from tests.conftest import build_in_process

    census = Path(__file__).resolve().parents[1] / "fixtures" / "census"
    module, datamodule = build_in_process(["data=census_income", f"data.root={census}", "arch=ple"])
    batch = next(iter(datamodule.train_dataloader()))
    architecture = module.architecture
    assert architecture.encoder(batch).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert architecture.encoder(batch).dtype == torch.bfloat16
        outputs = architecture(batch)
    sum(logits.float().sum() for logits in outputs.logits.values()).backward()
    grads = [p.grad for p in architecture.encoder.parameters()]
    assert grads and all(g is not None and g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads)
