"""The bot's turn loop: searches run on the local database and are fed back; failures are fed back, never raised."""

from __future__ import annotations


import pytest

from bot_support import FORMAT_NAMES, ScriptedPolicy, real_tiny_policy, scripted_generator
from tooltune.bot import Session, SessionConfig
from tooltune.dialogue import Assistant, Call, Result, User, check_order
from tooltune.errors import InputError

CHEAP = {"type": "经济型", "rating_range_lower": 4.5}


def test_call_runs_on_the_database_and_the_records_are_fed_back(db):
    policy = ScriptedPolicy([Call(CHEAP), Assistant("推荐第一家。")])
    session = Session(policy, db, SessionConfig(limit=2))
    ex = session.send("找一家评分4.5以上的经济型酒店")
    expected = db.search(CHEAP, limit=2).records
    assert len(expected) == 2 and ex.searches[0].records == expected and ex.searches[0].error is None
    assert ex.reply == "推荐第一家。" and not ex.stopped and ex.raw == ["raw 0", "raw 1"]
    # the model was asked twice: after the user turn, then after the result holding exactly those records
    assert policy.histories[0] == (User("找一家评分4.5以上的经济型酒店"),)
    assert policy.histories[1][-2:] == (Call(CHEAP), Result(expected))
    assert session.history == [User("找一家评分4.5以上的经济型酒店"), Call(CHEAP), Result(expected),
                               Assistant("推荐第一家。")]
    assert ex.turns == session.history[1:]


@pytest.mark.parametrize("args,error", [
    ({"price_range_lower": 500, "price_range_upper": 100}, "price_range_lower 500 is above price_range_upper 100"),
    ({"type": "五星级"}, "type"),
    ({"rating_range_lower": "高"}, "rating_range_lower"),
])
def test_bad_arguments_become_an_error_record_the_model_sees(db, args, error):
    policy = ScriptedPolicy([Call(args), Assistant("抱歉，条件有误。")])
    ex = Session(policy, db).send("找酒店")
    assert ex.searches[0].records == [] and error in ex.searches[0].error
    fed = policy.histories[1][-1]
    assert isinstance(fed, Result) and list(fed.records[0]) == ["error"] and error in fed.records[0]["error"]
    assert ex.reply == "抱歉，条件有误。"


def test_nothing_found_is_an_empty_result(db):
    args = {"name": "量子纠缠酒店", "type": "豪华型"}
    assert db.search(args).records == []
    policy = ScriptedPolicy([Call(args), Assistant("没有找到。")])
    ex = Session(policy, db).send("找量子纠缠酒店")
    assert ex.searches[0].records == [] and ex.searches[0].error is None
    assert policy.histories[1][-1] == Result([])


def test_unknown_tool_and_unreadable_call_are_fed_back_as_errors(db):
    policy = ScriptedPolicy([Call({"city": "北京"}, name="search_flights"), Call({}), Call(CHEAP),
                             Assistant("好的。")], malformed=[False, True, True])
    ex = Session(policy, db).send("找酒店")
    first, unreadable, partly = ex.searches
    assert "unknown tool 'search_flights'" in first.error
    assert "could not be read" in unreadable.error and unreadable.records == []
    # a malformed call whose arguments were read still runs with them, and is counted
    assert partly.error is None and partly.records == db.search(CHEAP).records
    assert ex.malformed == 2


def test_calls_are_bounded_per_user_turn_and_the_conversation_goes_on(db):
    policy = ScriptedPolicy([Call(CHEAP)] * 3 + [Assistant("好的。")])
    session = Session(policy, db, SessionConfig(max_calls=2))
    ex = session.send("一直查")
    assert ex.stopped and ex.reply is None
    assert [s.executed for s in ex.searches] == [True, True, False]
    assert isinstance(session.history[-1], Call)  # left unanswered: the user speaks next
    again = session.send("算了")
    assert again.reply == "好的。"
    check_order(session.history)


def test_reset_and_history_checks(db):
    policy = ScriptedPolicy([Assistant("你好。"), Assistant("再见。")])
    session = Session(policy, db)
    session.send("你好")
    session.reset()
    session.send("再见")
    assert policy.histories[1] == (User("再见"),)
    with pytest.raises(InputError, match="history"):
        Session(policy, db, history=[Assistant("x")])
    with pytest.raises(InputError, match="user or result"):
        Session(policy, db, history=[User("a"), Assistant("b")]).respond()


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_format_through_the_real_generator(db, name):
    """The format renders the prompt, the generator decodes, the format parses: a call and a reply come back."""
    call, reply = Call({"type": "豪华型", "price_range_upper": 2000}), Assistant("推荐这家豪华型酒店。")
    policy, model, tok = scripted_generator(name, [call, reply])
    ex = Session(policy, db).send("找一家两千以内的豪华型酒店")
    assert ex.searches[0].call == call and ex.reply == reply.content and ex.malformed == 0
    records = db.search(call.arguments).records
    assert records and ex.searches[0].records == records
    second_prompt = tok.decode(model.prompts[1])
    assert records[0]["name"] in second_prompt and "找一家两千以内的豪华型酒店" in second_prompt


def test_a_real_tiny_model_end_to_end(db):
    """Random weights write anything: every turn still ends as a reply or a bounded run of calls, never a crash."""
    session = Session(real_tiny_policy("llama2"), db, SessionConfig(max_calls=1))
    for text in ("你好", "找一家经济型酒店"):
        ex = session.send(text)
        assert ex.raw and (ex.reply is not None or not ex.searches[-1].executed)
    check_order(session.history)
    assert sum(isinstance(t, User) for t in session.history) == 2


def test_session_config_is_checked():
    with pytest.raises(InputError, match="limit"):
        SessionConfig(limit=0)
