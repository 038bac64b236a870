"""The course's metrics on hand-computed cases (see REFERENCE.md, 'Metric definitions')."""

import math

import pytest

from tooltune.dialogue import Assistant, Call
from tooltune.evaluate.metrics import SlotCounts, char_bleu4, rouge_words, slot_counts, slot_counts_by_key
from tooltune.evaluate.predictions import Row
from tooltune.evaluate.score import course_metrics


def test_exact_two_character_reply_scores_59_46():
    # No 3- or 4-grams: method3 smooths p3 = 1/2, p4 = 1/4; (1 * 1 * 1/2 * 1/4) ** (1/4) = 0.5946.
    assert round(100 * char_bleu4("好的", "好的"), 2) == 59.46
    assert char_bleu4(" 好的\n", "好的") == char_bleu4("好的", "好的")  # both sides are stripped


def test_bleu_hand_computed_with_brevity_penalty():
    # hyp "ab", ref "abc": p1 = p2 = 1, p3 -> 1/2, p4 -> 1/4, brevity penalty exp(1 - 3/2).
    expected = math.exp(1 - 3 / 2) * (1 * 1 * 0.5 * 0.25) ** 0.25
    assert char_bleu4("ab", "abc") == pytest.approx(expected, abs=1e-12)
    assert char_bleu4("酒店很好", "酒店很好") == pytest.approx(1.0)


@pytest.mark.parametrize("hyp, ref", [("", "好的"), ("好的", ""), ("   ", "好的"), ("好的", " \n")])
def test_bleu_empty_side_is_zero(hyp, ref):
    assert char_bleu4(hyp, ref) == 0.0


def test_scalar_slots_compare_with_equality():
    assert slot_counts({"price_range_upper": 300.0}, {"price_range_upper": 300}) == SlotCounts(1, 1, 1)
    assert slot_counts({"price_range_upper": "300"}, {"price_range_upper": 300}) == SlotCounts(0, 1, 1)
    assert slot_counts({"type": "舒适型"}, {"type": "经济型"}) == SlotCounts(0, 1, 1)


def test_null_valued_key_is_predicted_but_never_correct():
    assert slot_counts({"name": None, "type": "舒适型"}, {"type": "舒适型"}) == SlotCounts(1, 2, 1)
    # null even when the gold has the key (and even if the gold were null too)
    assert slot_counts({"name": None}, {"name": "如家"}) == SlotCounts(0, 1, 1)
    assert slot_counts({"name": None}, {"name": None}) == SlotCounts(0, 1, 1)


def test_list_elements_are_slots_and_duplicates_count_each_time():
    gold = {"facilities": ["无烟房", "吹风机"]}
    assert slot_counts({"facilities": ["吹风机", "早餐"]}, gold) == SlotCounts(1, 2, 2)
    # The course tests `element in gold` once per predicted element: a repeated correct element counts twice,
    # so recall can exceed 1 (2 correct of 1 gold slot).
    dup = slot_counts({"facilities": ["无烟房", "无烟房"]}, {"facilities": ["无烟房"]})
    assert dup == SlotCounts(2, 2, 1) and dup.recall == 2.0
    assert slot_counts({"facilities": []}, gold) == SlotCounts(0, 0, 2)
    assert slot_counts({"price_range_upper": [300]}, {"price_range_upper": [300.0]}) == SlotCounts(1, 1, 1)


def test_list_against_scalar_gold_compares_elements_with_equality():
    # The course would test `"如家" in "如家快捷"` (a substring): tooltune counts exact equality only.
    assert slot_counts({"name": ["如家"]}, {"name": "如家快捷"}) == SlotCounts(0, 1, 1)
    assert slot_counts({"price_range_upper": [300]}, {"price_range_upper": 300}) == SlotCounts(1, 1, 1)


def test_hand_computed_turn_and_per_key_counts():
    gold = {"type": "舒适型", "facilities": ["无烟房", "wifi"], "price_range_upper": 300}
    pred = {"type": "舒适型", "facilities": ["无烟房", "早餐"], "price_range_upper": 300.0, "name": None}
    counts = slot_counts(pred, gold)
    assert counts == SlotCounts(correct=3, predicted=5, gold=4)
    assert (counts.precision, counts.recall) == (0.6, 0.75)
    assert counts.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    by_key = slot_counts_by_key(pred, gold)
    assert list(by_key) == ["type", "facilities", "price_range_upper", "name"]
    assert by_key["facilities"] == SlotCounts(1, 2, 2) and by_key["name"] == SlotCounts(0, 1, 0)


def test_no_call_predicted_counts_as_empty_and_zero_denominators_give_zero():
    assert slot_counts(None, {"type": "舒适型", "facilities": ["a", "b"]}) == SlotCounts(0, 0, 3)
    empty = SlotCounts()
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)


def test_wrong_turn_types():
    rows = [
        Row("t:0:1", Assistant("好的"), Assistant("好的"), "好的"),
        Row("t:0:3", Assistant("好的"), Call({"type": "舒适型"}), "search: ..."),  # BLEU 0, counted in the mean
        Row("t:1:1", Call({"type": "舒适型", "facilities": ["无烟房"]}), Call({"type": "舒适型"}), ""),
        Row("t:1:5", Call({"price_range_upper": 300}), Assistant("好的"), "好的"),  # counts as {}: recall falls
        Row("t:2:1", Call({"type": "经济型"}), None, "search: {broken"),  # unparsable counts as {} too
    ]
    m = course_metrics(rows)
    assert m["n_replies"] == 2 and m["n_calls"] == 3
    assert m["bleu4"] == pytest.approx(100 * char_bleu4("好的", "好的") / 2)
    assert m["slots"] == {"correct": 1, "predicted": 1, "gold": 4}
    assert (m["slot_p"], m["slot_r"]) == (100.0, 25.0)
    assert m["slot_f1"] == pytest.approx(40.0)


def test_course_metrics_of_nothing_are_zero():
    m = course_metrics([])
    assert (m["bleu4"], m["slot_p"], m["slot_r"], m["slot_f1"], m["n_calls"], m["n_replies"]) == (0, 0, 0, 0, 0, 0)


def test_rouge_on_jieba_words():
    same = rouge_words("推荐北京红驿栈酒店", "推荐北京红驿栈酒店")
    assert same == pytest.approx({"rouge-1": 1.0, "rouge-2": 1.0, "rouge-l": 1.0})
    assert rouge_words("", "推荐北京红驿栈酒店") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    partial = rouge_words("推荐北京酒店", "推荐北京红驿栈酒店")
    assert 0 < partial["rouge-2"] < partial["rouge-1"] < 1
