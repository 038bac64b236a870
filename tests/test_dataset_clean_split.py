"""Cleaning (duplicates, schema, leakage) and the seeded stratified split."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tooltune.dataset.clean import CleanConfig, clean, remove_leakage
from tooltune.dataset.items import make_item
from tooltune.dataset.split import kfold, stratified_split, stratum
from tooltune.dialogue import Assistant, Call, Result, User


def _item(index, text, args, reply="好的。"):
    return make_item([User(text), Call(args), Result([{"name": "北京饭店"}]), Assistant(reply)], "src.json", index)


def test_exact_duplicates_ignore_punctuation_and_number_types():
    a = _item("0", "我想找一家300元以上的酒店。", {"price_range_lower": 300})
    b = _item("1", "我想找一家 300元以上的酒店！", {"price_range_lower": 300.0}, reply="另一个回答")
    c = _item("2", "我想找一家300元以上的酒店。", {"price_range_lower": 400})
    kept, removed = clean([a, b, c])
    assert [i.index for i in kept] == ["0", "2"]
    assert [(r.source, r.index, r.reason) for r in removed] == [("src.json", "1", "exact duplicate")]
    assert "src.json#0" in removed[0].detail


def test_near_duplicates_need_similar_text_and_the_same_arguments():
    base = "你好，请帮我找一家评分在4.5分以上、提供免费市内电话和行李寄存服务的高档型酒店，谢谢你啦"
    args = {"type": "高档型", "rating_range_lower": 4.5}
    near = _item("1", base + "呀", args)
    other_args = _item("2", base + "呀", {"type": "豪华型", "rating_range_lower": 4.5})
    far = _item("3", "找个便宜点的酒店", args)
    kept, removed = clean([_item("0", base, args), near, other_args, far])
    assert [i.index for i in kept] == ["0", "2", "3"]
    assert removed[0].reason == "near duplicate" and "Jaccard" in removed[0].detail
    kept, removed = clean([_item("0", base, args), near], CleanConfig(threshold=1.0))
    assert len(kept) == 2  # only identical n-gram sets count at threshold 1


def test_invalid_turns_and_arguments_outside_the_schema_are_removed_with_their_reason():
    items = [_item("0", "评分6分以上", {"rating_range_lower": 6}), _item("1", "按星级找", {"stars": 5}),
             _item("2", "   ", {"type": "经济型"}), _item("3", "类型", {"type": "民宿"}), _item("4", "好", {})]
    kept, removed = clean(items)
    assert [i.index for i in kept] == ["4"]
    reasons = {r.index: (r.reason, r.detail) for r in removed}
    assert reasons["0"][0] == "arguments outside the schema" and "maximum" in reasons["0"][1]
    assert "unknown argument" in reasons["1"][1] and "not one of" in reasons["3"][1]
    assert reasons["2"][0] == "invalid turns"


def test_leakage_is_removed_from_the_later_split():
    train = [_item("0", "我想找一家300元以上的酒店", {"price_range_lower": 300})]
    dev = [_item("1", "我想找一家300元以上的酒店", {"price_range_lower": 300}), _item("2", "别的", {"type": "经济型"})]
    test = [_item("3", "别的。", {"type": "经济型"})]
    splits, removed = remove_leakage({"train": train, "dev": dev, "test": test})
    assert [len(splits[k]) for k in ("train", "dev", "test")] == [1, 1, 0]
    assert [(r.index, r.reason) for r in removed] == [("1", "leakage into dev"), ("3", "leakage into test")]


def test_stratified_split_shares_strata_and_determinism():
    items = [(i, "abc"[i % 3] if i < 900 else "rare") for i in range(1000)]
    parts = stratified_split(items, key=lambda x: x[1], ratios=(0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [800, 100, 100]
    assert sorted(x for p in parts for x in p) == items  # disjoint and complete
    for p, share in zip(parts, (0.8, 0.1, 0.1)):
        counts = Counter(x[1] for x in p)
        assert abs(counts["a"] - 300 * share) <= 1 and abs(counts["rare"] - 100 * share) <= 1
    assert parts == stratified_split(items, lambda x: x[1], (8, 1, 1), seed=3)  # ratios need not sum to 1
    assert parts != stratified_split(items, lambda x: x[1], (8, 1, 1), seed=4)
    tiny = stratified_split(list(range(5)), key=lambda x: x, ratios=(0.8, 0.1, 0.1), seed=0)
    assert [len(p) for p in tiny] == [4, 1, 0]  # singleton strata fill parts in turn, not all in the first


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=60), st.integers(0, 10**6), st.integers(2, 6))
def test_split_and_kfold_partition_any_input(keys, seed, k):
    items = list(enumerate(keys))
    parts = stratified_split(items, lambda x: x[1], (0.8, 0.1, 0.1), seed)
    assert sorted(x for p in parts for x in p) == items
    assert all(abs(len(p) - s * len(items)) <= 1 for p, s in zip(parts, (0.8, 0.1, 0.1)))
    folds = kfold(items, lambda x: x[1], k, seed)
    held = [x for _, h in folds for x in h]
    assert sorted(held) == items and all(sorted(t + h) == items for t, h in folds)


def test_split_rejects_bad_ratios_and_stratum_reads_calls():
    with pytest.raises(ValueError, match="ratios"):
        stratified_split([1], lambda x: x, (), 0)
    item = make_item([User("a"), Call({"type": "经济型"}), User("b"),
                      Call({"type": "经济型", "price_range_upper": 300})], "s", "0")
    assert stratum(item) == ("price_range_upper+type", "multi")
