"""Augmentation: each kind does what it says, draws from its own seeded stream, and is counted."""

from __future__ import annotations

import random

import pytest

from tooltune.dataset import augment as aug
from tooltune.dataset.augment import AugmentConfig
from tooltune.dataset.items import make_item
from tooltune.dialogue import Assistant, Call, Result, User, dialogue_to_seed

HOTEL = {"name": "北京盛厦宾馆", "type": "经济型", "address": "北京东城区1号", "subway": "东单地铁站A口",
         "phone": "010-1234", "facilities": ["无烟房", "叫醒服务"], "price": 258.0, "rating": 4.5, "hotel_id": 3}
OTHER = dict(HOTEL, name="北京和平宾馆", price=None, hotel_id=4, facilities=["SPA"])


def _item(index="0"):
    turns = [User("帮我找一家有无烟房的经济型酒店"), Call({"type": "经济型", "facilities": ["无烟房"]}),
             Result([dict(HOTEL)]), Assistant("推荐北京盛厦宾馆。"),
             User("评分要4.5分以上"), Call({"type": "经济型", "facilities": ["无烟房"], "rating_range_lower": 4.5}),
             Result([dict(HOTEL)]), Assistant("还是北京盛厦宾馆。")]
    return make_item(turns, "test", index)


def test_paraphrase_changes_user_text_and_every_later_call():
    table = {"无烟房": ["不吸烟的房间"]}
    new = aug.add_paraphrase(_item(), table, random.Random(0))
    turns = new.dialogue.turns
    assert turns[0].content == "帮我找一家有不吸烟的房间的经济型酒店"
    assert turns[1].arguments["facilities"] == ["不吸烟的房间"]
    assert turns[5].arguments["facilities"] == ["不吸烟的房间"]  # carried-over constraint follows the phrase
    assert new.augments == ("paraphrase",)
    assert aug.add_paraphrase(_item(), {"叫醒服务": ["叫早"]}, random.Random(0)) is None  # not said literally


def test_learned_pairs_without_a_shared_piece_are_dropped_but_rules_stay():
    table = aug.paraphrase_table({"风筝机": "吹风机", "电吹风": "吹风机", "a | b": "SPA"}, {"按摩": "SPA"})
    assert table["吹风机"] == ["电吹风"]
    assert table["SPA"] == ["按摩"]
    assert table["中式餐厅"] == ["中餐"]  # from the module's own RULES


def test_qa_answers_from_the_record():
    for seed in range(20):
        new = aug.add_qa(_item(), ["SPA", "无烟房"], random.Random(seed))
        turns = new.dialogue.turns
        at = next(i for i, t in enumerate(turns) if isinstance(t, User) and i not in (0, len(turns) - 4)
                  and not isinstance(turns[i + 1], Call))
        question, answer = turns[at].content, turns[at + 1].content
        assert isinstance(turns[at - 1], Assistant)
        if "电话" in question:
            assert "010-1234" in answer
        elif "地址" in question or "位置" in question:
            assert "北京东城区1号" in answer
        elif "多少钱" in question or "价格" in question:
            assert "258元" in answer
        elif "SPA" in question:
            assert answer.startswith("没有")
        elif "无烟房" in question:
            assert answer.startswith("有的")
        assert len(turns) == 10


def test_qa_skips_missing_fields_and_closing_needs_a_final_reply():
    for seed in range(30):
        q, a = aug.qa_pair(OTHER, True, ["SPA"], random.Random(seed))
        assert "None" not in a  # OTHER has no price: never asked
    closed = aug.add_closing(_item(), random.Random(1))
    assert closed.dialogue.turns[-2].content.count("北京盛厦宾馆") == 1
    assert isinstance(closed.dialogue.turns[-1], Assistant)
    no_records = make_item([User("有酒店吗"), Call({}), Result([]), Assistant("没有。")], "t", "1")
    assert aug.add_closing(no_records, random.Random(1)) is None and aug.add_qa(no_records, [], random.Random(1)) is None


def test_generated_queries_match_their_arguments():
    hotels = [dict(HOTEL), dict(OTHER), dict(HOTEL, name="北京贵宾楼饭店", price=1500.0, hotel_id=5)]
    for seed in range(20):
        turns = aug.named_query(hotels[0], random.Random(seed))
        query = turns[1].arguments["name"]
        assert all(ch in hotels[0]["name"] for ch in query) and turns[2].records == [hotels[0]]
        turns = aug.price_query(hotels, random.Random(seed))
        bound = turns[1].arguments["price_range_upper"]
        assert all(r["price"] is not None and r["price"] <= bound for r in turns[2].records)
        assert str(bound) in turns[0].content
    assert aug.short_name("北京盛厦宾馆") == "盛厦宾馆"
    assert aug.short_name("速8酒店(北京前门店)") == "速8酒店(前门店)"


def test_augment_is_seeded_counted_and_switches_are_independent():
    items = [_item(str(i)) for i in range(60)]
    hotels = [dict(HOTEL), dict(OTHER)]
    table = {"无烟房": ["不吸烟的房间", "禁烟房"]}
    cfg = AugmentConfig(named=5, price_upper=4)
    out1, counts1 = aug.augment(items, hotels, table, cfg, seed=7)
    out2, _ = aug.augment(items, hotels, table, cfg, seed=7)
    out3, _ = aug.augment(items, hotels, table, cfg, seed=8)
    seeds = lambda out: [dialogue_to_seed(i.dialogue) for i in out]
    assert seeds(out1) == seeds(out2) != seeds(out3)
    assert len(out1) == 60 + 5 + 4 and counts1["named"] == 5 and counts1["price_upper"] == 4
    for kind in ("paraphrase", "qa", "closing"):
        touched = sum(kind in i.augments for i in out1)
        assert touched == counts1[kind] and 5 <= touched <= 35  # p = 0.3 of 60
    no_qa, counts = aug.augment(items, hotels, table, AugmentConfig(qa=False, named=0, price_upper=0), seed=7)
    assert counts["qa"] == 0
    assert [("paraphrase" in i.augments) for i in no_qa] == [("paraphrase" in i.augments) for i in out1[:60]]


def test_config_is_validated():
    with pytest.raises(ValueError, match="p must be"):
        AugmentConfig(p=1.5)


def test_qa_does_not_ask_what_the_user_asks_later():
    for seed in range(30):
        q, _ = aug.qa_pair(HOTEL, True, ["SPA"], random.Random(seed), asked="电话和地址呢？评分多少？价格呢？地铁呢")
        assert "有" in q or "提供" in q  # only the facility question is left
