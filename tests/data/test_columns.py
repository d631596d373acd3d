"""Per-kind column transformers and label encoders: fit on training only, exact ids, the state
round trip, and the errors that name the column and the row."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mtlrec.data.columns.categorical import CategoricalColumns
from mtlrec.data.columns.tokens import FIRST_TOKEN_ID, OOV, PAD, MultiHotColumn, TextColumn
from mtlrec.data.labels import label_encoder
from mtlrec.data.preprocess import Preprocessor
from mtlrec.data.schema import FeatureSpec, Schema, SchemaError, TaskSpec
from mtlrec.models.inputs.token_bag import TokenBag


def _fit(cls, values, **options):
    t = cls([FeatureSpec("f", cls.kind, options)])
    t.fit(pd.DataFrame({"f": values}), "train")
    return t


def test_multi_hot_ids_padding_oov_and_duplicates() -> None:
    t = _fit(MultiHotColumn, ["drama|comedy", " comedy | drama |comedy", "", None, "horror"])
    assert t.vocabulary == ["comedy", "drama", "horror"]  # duplicates count once
    ids = t.transform(pd.DataFrame({"f": ["comedy|western", "", None, "horror|drama|comedy"]}), "val")
    c, d, h = (FIRST_TOKEN_ID + i for i in range(3))
    # a list longer than any in training keeps every tag: the width is this frame's longest row
    assert ids.tolist() == [[c, OOV, PAD], [PAD, PAD, PAD], [PAD, PAD, PAD], [h, d, c]]


def test_multi_hot_pooling_equals_the_hand_computation() -> None:
    t = _fit(MultiHotColumn, ["a|b|c", "b", ""], separator="|")
    ids = t.transform(pd.DataFrame({"f": ["a|c", "b", "", "zzz"]}), "val")
    torch.manual_seed(0)
    bag = TokenBag(**t.encoder_args(), embedding_dim=4)
    W = bag.bag.weight.detach()
    a, b, c = (FIRST_TOKEN_ID + i for i in range(3))
    expected = torch.stack([(W[a] + W[c]) / 2, W[b], torch.zeros(4), W[OOV]])
    torch.testing.assert_close(bag(ids), expected)


def test_multi_hot_options_and_a_cell_that_is_not_a_list() -> None:
    t = _fit(MultiHotColumn, ["a;b", "b;c", "b"], separator=";", min_count=2)
    assert t.vocabulary == ["b"]
    t = _fit(MultiHotColumn, ["a|b", "b|c", "b|a", "b"], max_vocab=2, max_tokens=1)
    assert t.vocabulary == ["a", "b"]  # the two most frequent tags
    assert t.transform(pd.DataFrame({"f": ["b|a", "a"]}), "val").tolist() == [[3], [2]]  # max_tokens=1 cuts
    with pytest.raises(SchemaError, match=r"multi-hot feature 'f': row 7 holds 3\.5"):
        t.transform(pd.DataFrame({"f": ["a", 3.5]}, index=[6, 7]), "val")


def test_text_tokens_lower_case_words_in_order() -> None:
    t = _fit(TextColumn, ["Love it! It's soft.", "it runs small", "LOVE"], max_tokens=4)
    assert t.vocabulary == ["it", "love"]  # words seen twice (min_count 2 by default)
    assert t.tokens(pd.Series(["Love it! It's soft."])).tolist() == [["love", "it", "it's", "soft"]]
    ids = t.transform(pd.DataFrame({"f": ["love, love it", None]}), "val")
    v = {w: FIRST_TOKEN_ID + i for i, w in enumerate(t.vocabulary)}
    assert ids.tolist() == [[v["love"], v["love"], v["it"]], [PAD] * 3]


def test_token_state_round_trips() -> None:
    t = _fit(TextColumn, ["a b", "b c", "a"], min_count=1)
    twin = TextColumn([FeatureSpec("f", "text", {"min_count": 1})])
    twin.load_state_dict(t.state_dict())
    frame = pd.DataFrame({"f": ["c a zz", "b"]})
    assert torch.equal(twin.transform(frame, "x"), t.transform(frame, "x"))


@pytest.mark.parametrize("kind, options, message", [
    ("numeric", {"log": True}, "unknown option"),
    ("text", {"separator": "|"}, "unknown option"),
    ("image", {"path": "x"}, "unknown option"),
    ("video", {}, "kind 'video' is not supported"),
])
def test_feature_options_are_checked_by_the_kind(kind, options, message) -> None:
    with pytest.raises(SchemaError, match=message):
        FeatureSpec("f", kind, options)


def test_multilabel_tags_fit_on_training_unseen_ignored_empty_is_no_tag() -> None:
    enc = label_encoder(TaskSpec("tags", "multilabel", "tags", separator=","))
    enc.fit(pd.Series(["knit,sale", "dress", None, ""]), "train")
    assert enc.fitted_task().classes == ("dress", "knit", "sale") and enc.fitted_task().logit_dim == 3
    y = enc.transform(pd.Series(["sale,brand-new", "", None]), "val")
    assert y.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(SchemaError, match=r"row 12 holds the malformed tag list 'knit,,sale'"):
        enc.transform(pd.Series(["knit", "knit,,sale"], index=[11, 12]), "val")
    declared = label_encoder(TaskSpec("tags", "multilabel", "tags", classes=("knit", "sale")))
    with pytest.raises(SchemaError, match=r"row 1 holds the tag 'knti', which is not one of the declared classes"):
        declared.fit(pd.Series(["knit", "knti|sale"]), "train")  # in training an undeclared tag is a typo
    declared.fit(pd.Series(["knit", "sale"]), "train")
    assert declared.transform(pd.Series(["knit|new"]), "val").tolist() == [[1, 0]]  # outside training: ignored


def test_multiclass_labels_by_declared_classes() -> None:
    enc = label_encoder(TaskSpec("dept", "multiclass", "dept", classes=("Tops", "Dresses")))
    assert enc.transform(pd.Series(["Dresses", "Tops"]), "train").tolist() == [1, 0]
    with pytest.raises(SchemaError, match=r"row 4 holds 'Jackets', which is not one of the declared classes"):
        enc.transform(pd.Series(["Tops", "Jackets"], index=[3, 4]), "val")
    stars = label_encoder(TaskSpec("stars", "multiclass", "rating", classes=(1, 2, 3, 4, 5)))
    assert stars.transform(pd.Series([5, 1, 3.0]), "train").tolist() == [4, 0, 2]  # "3.0" matches class 3


def test_preprocessor_saves_the_fitted_tags_and_reloads_them(tmp_path) -> None:
    schema = Schema((FeatureSpec("x", "numeric"),), (TaskSpec("tags", "multilabel", "tags"),), "tags")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "tags": ["b|a", "a", ""]})
    pre = Preprocessor(schema).fit(frame)
    assert pre.fitted_schema.task("tags").classes == ("a", "b")
    pre.save(tmp_path / "p.json")
    again = Preprocessor.load(tmp_path / "p.json", pre.fitted_schema)
    assert torch.equal(again.transform(frame).labels["tags"], pre.transform(frame).labels["tags"])


def test_a_split_where_no_tag_has_both_values_is_refused() -> None:
    from mtlrec.data.datamodule import check_split

    schema = Schema((FeatureSpec("x", "numeric"),), (TaskSpec("tags", "multilabel", "tags"),), "tags")
    pre = Preprocessor(schema).fit(pd.DataFrame({"x": [1.0, 2.0, 3.0], "tags": ["a|b", "a", ""]}))
    fine = pre.transform(pd.DataFrame({"x": [1.0, 2.0], "tags": ["a", "b"]}))
    check_split(fine, pre.fitted_schema, "data/val")
    every_row_alike = pre.transform(pd.DataFrame({"x": [1.0, 2.0], "tags": ["a|b", "a|b"]}))
    with pytest.raises(SchemaError, match=r"data/val: multilabel task 'tags' has no tag that is both present and absent"):
        check_split(every_row_alike, pre.fitted_schema, "data/val")


def _categorical_ids(chunks, transform_frames, min_count=1):
    t = CategoricalColumns([FeatureSpec("f", "categorical", {"min_count": min_count})])
    t.begin_fit()
    for chunk in chunks:
        t.partial_fit(pd.DataFrame({"f": chunk}), "train")
    t.end_fit()
    return t.vocabularies["f"], [t.transform(pd.DataFrame({"f": v}), "val").tolist() for v in transform_frames]


def test_integer_columns_get_the_ids_of_their_string_keys() -> None:
    """Integer columns are counted and looked up as integers (no string per row); the ids must be
    those of their string keys, whatever the chunks' dtypes and however the vocabulary is mixed."""
    ints = pd.Series([7, -3, 7, 0, 12, 2**62, 7, 12], dtype="int64")
    as_text = ints.astype(str).astype(object)
    queries = [pd.Series([7, 12, 99, -3, 0, 2**62], dtype="int64"),
               pd.Series(["7", "12", "99", "-3", "0", str(2**62)], dtype=object)]
    fast = _categorical_ids([ints[:3], ints[3:]], queries, min_count=2)
    slow = _categorical_ids([as_text[:5], as_text[5:]], queries, min_count=2)
    assert fast == slow and fast[0] == ["12", "7"]
    assert fast[1][0] == [[2], [1], [0], [0], [0], [0]]  # sorted as strings: "12" < "7"; the rest is OOV
    # one chunk of integers, one of strings and floats that are not canonical integers
    mixed = [pd.Series([5, 5, 40], dtype="int64"), pd.Series(["05", "5", 5.5, "x", None], dtype=object)]
    vocabulary, (ids_int, ids_text) = _categorical_ids(mixed, [pd.Series([5, 40, 6], dtype="int64"),
                                                               pd.Series(["05", "5", "5.5", "x", None])])
    assert vocabulary == sorted(["05", "40", "5", "5.5", "<missing>", "x"])
    position = {k: i + 1 for i, k in enumerate(vocabulary)}
    assert ids_int == [[position["5"]], [position["40"]], [0]]  # 5 is "5", never "05"
    assert ids_text == [[position[k]] for k in ["05", "5", "5.5", "x", "<missing>"]]


def test_arrow_strings_get_the_ids_of_the_same_strings_as_objects() -> None:
    """Text read by pandas 3 is Arrow-backed and looked up by Arrow: the same ids as the same
    values held as Python objects, missing values and unseen ones included, in either storage."""
    train = ["b", "a", None, "c", "a", "é"]
    query = ["a", "zz", None, "é", "c", "b", ""]
    arrow = _categorical_ids([pd.Series(train, dtype="str")], [pd.Series(query, dtype="str")])
    python = _categorical_ids([pd.Series(train, dtype="str")], [pd.Series(query, dtype="string[python]")])
    objects = _categorical_ids([pd.Series(train, dtype=object)], [pd.Series(query, dtype=object)])
    assert pd.Series(query, dtype="str").dtype.storage == "pyarrow"
    assert arrow == python == objects
    vocabulary, (ids,) = arrow
    position = {k: i + 1 for i, k in enumerate(vocabulary)}
    expected = [position["a"]], [0], [position["<missing>"]], [position["é"]], [position["c"]], [position["b"]], [0]
    assert ids == list(expected)


def test_an_integer_column_against_a_vocabulary_without_integers_is_out_of_vocabulary() -> None:
    """min_count leaves no integer key (or the vocabulary is all strings): every id is OOV, no crash."""
    vocabulary, (ids,) = _categorical_ids([pd.Series([1, 2, 3], dtype="int64")], [pd.Series([1, 5], dtype="int64")],
                                          min_count=2)
    assert vocabulary == [] and ids == [[0], [0]]
    vocabulary, (ids,) = _categorical_ids([pd.Series(["a", "a"])], [pd.Series([1], dtype="int64")])
    assert vocabulary == ["a"] and ids == [[0]]
