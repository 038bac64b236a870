import pytest

from tooltune.dialogue import (HOTEL_TOOL, Assistant, Call, Dialogue, Result, User, dialogue_from_seed,
                               dialogue_to_seed, turn_from_seed)
from tooltune.errors import InputError
from tooltune.hotels import load_hotels
from tooltune.schema import argument_problems


def test_seed_round_trip_keeps_everything():
    seed = [{"role": "user", "content": "找个4.5分以上的酒店"},
            {"role": "search", "arguments": {"rating_range_lower": 4.5}},
            {"role": "return", "records": [{"name": "A", "price": 300.0}]},
            {"role": "assistant", "content": "推荐A。"}]
    d = dialogue_from_seed(seed)
    assert [type(t) for t in d.turns] == [User, Call, Result, Assistant]
    assert dialogue_to_seed(d) == seed
    assert d.targets() == [1, 3]


@pytest.mark.parametrize("turns, field", [
    ([Assistant("hi")], "turns[0]"),
    ([User("a"), User("b")], "turns[1]"),
    ([User("a"), Result([])], "turns[1]"),
    ([User("a"), Call({}), Assistant("x")], "turns[2]"),
])
def test_bad_role_order_names_the_turn(turns, field):
    with pytest.raises(InputError) as e:
        Dialogue(tuple(turns), where="f.jsonl:7")
    assert e.value.where == "f.jsonl:7" and e.value.field == field
    assert str(e.value).startswith("f.jsonl:7: " + field)


def test_unanswered_call_is_allowed():
    Dialogue((User("a"), Call({"name": "x"}), User("b"), Assistant("c")))


def test_bad_seed_turns_are_located():
    with pytest.raises(InputError, match=r"turns\[2\]\.role"):
        dialogue_from_seed([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                            {"role": "bot", "content": "c"}])
    with pytest.raises(InputError, match="arguments"):
        turn_from_seed({"role": "search", "arguments": "{not json"}, where="x:1")


def test_schema_problems():
    assert argument_problems(HOTEL_TOOL, {"type": "经济型", "facilities": ["无烟房"], "price_range_upper": 300}) == []
    problems = argument_problems(HOTEL_TOOL, {"type": "便宜型", "stars": 5, "rating_range_lower": 6,
                                              "price_range_lower": "300", "facilities": [1], "name": None})
    text = "\n".join(problems)
    for needle in ("type: '便宜型' is not one of", "stars: unknown argument", "rating_range_lower: 6 is above",
                   "price_range_lower: expected number", "facilities[0]: expected string", "name: expected string"):
        assert needle in text
    assert argument_problems(HOTEL_TOOL, {"rating_range_lower": True}) != []


def test_hotel_db_records(hotel_db_json):
    hotels = load_hotels(hotel_db_json)
    assert len(hotels) == 1133
    assert sum(h["price"] is None for h in hotels) == 121
    assert {h["type"] for h in hotels} == {"豪华型", "经济型", "舒适型", "高档型"}
    assert len({f for h in hotels for f in h["facilities"]}) == 37
    assert hotels[0]["hotel_id"] == 0 and isinstance(hotels[0]["price"], float)
