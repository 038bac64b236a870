"""Feedback through the API: completions from the official `openai` client, feedback on their ids with httpx, what
the store then holds, and the errors (OpenAI error bodies naming the field)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from bot_support import LiveServer, ScriptedPolicy, SwitchPolicy
from tooltune.bot import SessionConfig
from tooltune.bot.server import ServerConfig, create_app
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Result, User
from tooltune.feedback import FeedbackStore, read_conversations

ARGS = {"type": "豪华型", "rating_range_lower": 4.8}
TOOLS = [{"type": "function", "function": HOTEL_TOOL.to_dict()}]
KEY = "sk-test-feedback"


@pytest.fixture(scope="module")
def served(db, tmp_path_factory):
    """A server that stores feedback and needs an API key; the tests set the policy's script."""
    switch = SwitchPolicy()
    store = FeedbackStore(tmp_path_factory.mktemp("feedback-store") / "feedback.sqlite")
    config = ServerConfig(model_name="tiny", api_key=KEY, session=SessionConfig(limit=2), run="runs/tiny")
    with LiveServer(create_app(switch, db, config, feedback=store)) as url:
        yield url, switch, store
    store.close()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def feedback(url: str, body, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def conversation_of(store, text: str):
    (conv,) = [c for c in read_conversations(store.path) if c.turns[0].turn == User(text)]
    return conv


def test_feedback_on_a_call_and_on_the_reply_that_follows(served, db):
    url, switch, store = served
    ask = [{"role": "user", "content": "找一家评分4.8以上的豪华型酒店"}]
    switch.inner = ScriptedPolicy([Call(ARGS)])
    r = client(url).chat.completions.create(model="tiny", messages=ask, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    fixed = {"type": "豪华型", "rating_range_lower": 4.5, "facilities": ["免费WiFi"]}
    answer = feedback(url, {"completion_id": r.id, "rating": "bad", "correction": {"arguments": fixed}})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "feedback", "completion_id": r.id, "turn": 1, "role": "search",
                             "rating": "bad", "correction": {"role": "search", "arguments": fixed}}

    # the client runs the search and sends the records back: the reply continues the same stored conversation
    records = db.search(ARGS, limit=2).records
    switch.inner = ScriptedPolicy([Assistant("推荐这家。")])
    follow = ask + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(records, ensure_ascii=False)}]
    r2 = client(url).chat.completions.create(model="tiny", messages=follow, tools=TOOLS)
    assert r2.id != r.id and r2.choices[0].message.content == "推荐这家。"
    assert feedback(url, {"completion_id": r2.id, "rating": "good"}).json()["turn"] == 3

    conv = conversation_of(store, ask[0]["content"])
    assert conv.source == "api" and [s.turn for s in conv.turns] == [User(ask[0]["content"]), Call(ARGS),
                                                                    Result(records), Assistant("推荐这家。")]
    assert [s.completion for s in conv.turns] == [None, r.id, None, r2.id]  # the records came from the client
    assert [s.run for s in conv.turns] == [None, "runs/tiny", None, "runs/tiny"]
    assert (conv.turns[1].rating, conv.turns[1].correction) == ("bad", Call(fixed))
    assert (conv.turns[3].rating, conv.turns[3].correction) == ("good", None)


def test_executed_calls_are_stored_with_their_results_and_turn_picks_one(served, db):
    url, switch, store = served
    text = "帮我找评分4.8以上的豪华型酒店，谢谢"
    switch.inner = ScriptedPolicy([Call(ARGS), Assistant("为您找到了。")])
    r = client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}])  # no tools
    assert r.choices[0].message.content == "为您找到了。"
    assert feedback(url, {"completion_id": r.id, "turn": 1, "rating": "good"}).json()["role"] == "search"
    fixed = feedback(url, {"completion_id": r.id, "correction": {"content": "为您找到了两家豪华型酒店。"}}).json()
    assert (fixed["turn"], fixed["rating"], fixed["correction"]) == \
        (3, None, {"role": "assistant", "content": "为您找到了两家豪华型酒店。"})
    conv = conversation_of(store, text)
    assert [s.turn for s in conv.turns][1:3] == [Call(ARGS), Result(db.search(ARGS, limit=2).records)]
    assert [s.completion for s in conv.turns] == [None, r.id, r.id, r.id]  # the server ran that search
    assert conv.turns[1].rating == "good" and conv.turns[3].correction == Assistant("为您找到了两家豪华型酒店。")


def test_a_streamed_completion_takes_feedback_on_its_id(served):
    url, switch, store = served
    switch.inner = ScriptedPolicy([Assistant("您好，请问需要什么样的酒店？")])
    chunks = list(client(url).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "你好呀"}], stream=True))
    assert len({c.id for c in chunks}) == 1
    assert feedback(url, {"completion_id": chunks[0].id, "rating": "good"}).status_code == 200
    assert conversation_of(store, "你好呀").turns[1].rating == "good"


@pytest.mark.parametrize("body,status,param,text", [
    ({"completion_id": "chatcmpl-nope", "rating": "good"}, 404, "completion_id", "no completion"),
    ({"rating": "good"}, 400, "completion_id", "completion"),
    ({"completion_id": "COMPLETION", "rating": "great"}, 400, "rating", "good, bad"),
    ({"completion_id": "COMPLETION"}, 400, "rating", "a rating"),
    ({"completion_id": "COMPLETION", "ratings": "good"}, 400, "ratings", "did you mean 'rating'"),
    ({"completion_id": "COMPLETION", "turn": "1", "rating": "good"}, 400, "turn", "integer"),
    ({"completion_id": "COMPLETION", "turn": 0, "rating": "good"}, 400, "turn", "not written by this completion"),
    ({"completion_id": "COMPLETION", "turn": 2, "rating": "good"}, 400, "turn", "a result turn"),
    ({"completion_id": "COMPLETION", "correction": {"arguments": {"type": "六星级"}}}, 400, "correction.arguments",
     "六星级"),
    ({"completion_id": "COMPLETION", "correction": {"arguments": {}, "content": "x"}}, 400, "correction", "either"),
    ({"completion_id": "COMPLETION", "correction": "更好的回答"}, 400, "correction", "must be an object"),
])
def test_bad_feedback_gets_an_openai_error_naming_the_field(served, body, status, param, text):
    url, switch, store = served
    switch.inner = ScriptedPolicy([Call(ARGS), Assistant("好的。")])
    r = client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "找豪华型酒店"}])
    body = {k: (r.id if v == "COMPLETION" else v) for k, v in body.items()}
    answer = feedback(url, body)
    error = answer.json()["error"]
    assert answer.status_code == status and set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and text in error["message"], error


def test_feedback_needs_the_key_and_a_json_body(served):
    url, switch, store = served
    assert feedback(url, {"completion_id": "x", "rating": "good"}, key="sk-wrong").status_code == 401
    r = httpx.post(f"{url}/v1/feedback", content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_a_server_without_feedback_stores_nothing_and_says_so(db):
    switch = SwitchPolicy()
    switch.inner = ScriptedPolicy([Assistant("好的。")])
    with LiveServer(create_app(switch, db, ServerConfig(model_name="tiny"))) as url:
        r = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "你好"}])
        answer = httpx.post(f"{url}/v1/feedback", json={"completion_id": r.id, "rating": "good"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "feedback_disabled"
        switch.inner = ScriptedPolicy([Assistant("好的。")])
        page = httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "你好"}]}).json()
        assert page["completion_id"] is None and page["tools"] == []  # the page shows no feedback buttons


def test_the_web_endpoint_gives_each_turn_its_index(served, db):
    url, switch, store = served
    switch.inner = ScriptedPolicy([Call(ARGS), Assistant("推荐这家。")])
    ask = [{"role": "user", "content": "网页上找豪华型酒店"}]
    page = httpx.post(f"{url}/api/chat", json={"messages": ask}, headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [s["turn"] for s in page["searches"]] == [1] and page["reply_turn"] == 3
    assert page["completion_id"].startswith("chatcmpl-") and page["tools"] == [HOTEL_TOOL.to_dict()]
    assert page["messages"][page["reply_turn"]] == {"role": "assistant", "content": "推荐这家。"}
    assert feedback(url, {"completion_id": page["completion_id"], "turn": 1, "rating": "good"}).status_code == 200
    assert conversation_of(store, "网页上找豪华型酒店").source == "web"


def test_the_serve_command_stores_where_it_says(tmp_path, db, monkeypatch, capsys):
    from bot_support import save_tiny_run
    from tooltune import cli

    run = save_tiny_run(tmp_path / "run", "llama2")
    path = tmp_path / "feedback.sqlite"
    seen = {}

    def serve(app, host, port):  # instead of uvicorn.run: serve the app here while the command holds the store
        with LiveServer(app) as url:
            r = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="run", messages=[{"role": "user", "content": "你好"}])
            seen["feedback"] = httpx.post(f"{url}/v1/feedback", json={"completion_id": r.id, "rating": "bad"})

    monkeypatch.setattr("tooltune.bot.server.serve", serve)
    assert cli.main(["serve", str(run), "--db", str(db.path), "--max-new-tokens", "4", "--device", "cpu",
                     "--feedback-db", str(path)]) == 0
    assert f"feedback: conversations and feedback are stored in {path}" in capsys.readouterr().out
    assert seen["feedback"].status_code == 200
    (conv,) = read_conversations(path)
    assert conv.turns[-1].rating == "bad" and conv.turns[-1].run == str(run.resolve())
