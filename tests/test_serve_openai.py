"""`tooltune serve` speaks OpenAI: system messages, max_tokens, stop, sampling, usage, every bad request a 4xx in
OpenAI's error body naming its field, a body limit (413), a prompt-token limit, a bounded queue (503 + Retry-After).
All through the official `openai` client where it can send the request."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from bot_support import ASK, TOOLS, LiveServer, ScriptedPolicy, live_app, real_tiny_policy
from tooltune.bot.server import ServerConfig, create_app
from tooltune.dialogue import Assistant, Call, User



@pytest.fixture(scope="module")
def url(db, switch):
    with live_app(switch, db, max_body_bytes=64 * 1024) as u:
        yield u


@pytest.fixture(scope="module")
def tiny():
    """A real tiny model (random weights) behind a batching server: at most 6 tokens a turn, 300 prompt tokens."""
    return real_tiny_policy("llama2", max_new_tokens=6)


@pytest.fixture(scope="module")
def tiny_url(db, tiny):
    tiny.generator.max_prompt = 300
    with LiveServer(create_app(tiny, db, ServerConfig(model_name="tiny"))) as u:
        yield u


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def script(switch, *turns, malformed=()) -> ScriptedPolicy:
    switch.inner = ScriptedPolicy(list(turns), malformed)
    return switch.inner


def test_system_messages_reach_the_model_as_options(url, switch):
    policy = script(switch, Assistant("好的。"))
    messages = [{"role": "system", "content": "只用中文回答"}, {"role": "developer", "content": "简短"}] + ASK
    r = client(url).chat.completions.create(model="tiny", messages=messages)
    assert r.choices[0].message.content == "好的。"
    assert policy.options[0].system == "只用中文回答\n\n简短" and policy.histories[0] == (User(ASK[0]["content"]),)


def test_system_text_is_rendered_by_the_format(tiny):
    """llama2 has no system role: the text opens the first user turn (as Gemma's template does)."""
    gen = tiny.generator
    text = gen.tokenizer.decode(gen.full_prompt_ids([User("你好")], system="只用中文回答"))
    assert "user: 只用中文回答\n\n你好" in text
    assert gen.full_prompt_ids([User("你好")]) == gen.prompt_ids([User("你好")])


def test_request_options_are_passed_on(url, switch):
    policy = script(switch, Assistant("好的。"))
    client(url).chat.completions.create(model="tiny", messages=ASK, max_tokens=7, stop="。", temperature=0.5,
                                        top_p=0.9, seed=3, user="u1", parallel_tool_calls=False)
    got = policy.options[0]
    assert (got.max_new_tokens, got.stop, got.temperature, got.top_p, got.seed) == (7, ("。",), 0.5, 0.9, 3)
    policy = script(switch, Assistant("好的。"))
    client(url).chat.completions.create(model="tiny", messages=ASK, max_completion_tokens=4, stop=["a", "b"])
    assert policy.options[0].max_new_tokens == 4 and policy.options[0].stop == ("a", "b")
    assert policy.options[0].temperature == 0  # greedy unless asked


@pytest.mark.parametrize("extra,param", [
    ({"temperature": 2.5}, "temperature"), ({"temperature": "hot"}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"seed": "x"}, "seed"), ({"seed": 2**70}, "seed"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"), ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"), ({"stop": 5}, "stop"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"logit_bias": {"5": 10}}, "logit_bias"), ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"n": 3}, "n"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options"), ({"parallel_tool_calls": "no"},
                                                                       "parallel_tool_calls"),
])
def test_an_option_that_cannot_be_honoured_is_a_400_naming_it(url, switch, extra, param):
    script(switch)  # nothing may be generated
    with pytest.raises(openai.BadRequestError) as info:
        client(url).chat.completions.create(model="tiny", messages=ASK, extra_body=extra)
    error = info.value.body
    assert info.value.status_code == 400 and error["param"] == param and set(error) == {"message", "type",
                                                                                         "param", "code"}


def test_an_unknown_field_is_refused_by_name(url, switch):
    script(switch)
    with pytest.raises(openai.BadRequestError) as info:
        client(url).chat.completions.create(model="tiny", messages=ASK, extra_body={"temprature": 0.2})
    assert info.value.body["param"] == "temprature" and info.value.body["code"] == "unknown_parameter"


@pytest.mark.parametrize("messages,param,text", [
    (ASK + [{"role": "assistant", "tool_calls": {"id": "c", "type": "function"}}, ASK[0]], "messages[1].tool_calls",
     "must be a list"),
    (ASK + [{"role": "assistant", "tool_calls": 7}, ASK[0]], "messages[1].tool_calls", "must be a list"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "tool_calls": 7}, ASK[0]],
     "messages[1].tool_calls", "must be a list"),  # numbered as sent, system messages included
    ([{"role": "user", "content": [[[[["x"]]]] * 1]}], "messages[0].content", "text content"),
])
def test_malformed_messages_are_a_400_naming_the_field(url, switch, messages, param, text):
    script(switch)
    with pytest.raises(openai.BadRequestError) as info:
        client(url).chat.completions.create(model="tiny", messages=messages)
    assert info.value.body["param"] == param and text in info.value.body["message"]


def test_deep_nesting_huge_integers_and_lone_surrogates_are_a_400_not_a_500(url, switch):
    script(switch)
    deep: list = []
    for _ in range(300):
        deep = [deep]
    for extra, text in (({"metadata": {"x": deep}}, "nested more than 100 levels"),
                        ({"seed": 10**1000}, "more than 100 digits")):
        with pytest.raises(openai.BadRequestError) as info:
            client(url).chat.completions.create(model="tiny", messages=ASK, extra_body=extra)
        assert info.value.body["code"] == "invalid_json" and text in info.value.body["message"]
    # the openai client cannot encode a lone surrogate; JSON's escape of one can still arrive
    r = httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "\\udc80"}]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    assert "lone surrogate" in r.json()["error"]["message"]


@pytest.mark.parametrize("bad", [{"rating_range_lower": float("nan")}, {"rating_range_lower": 1j},
                                 {"facilities": {"a", "b"}}])
def test_a_call_the_schema_cannot_hold_is_a_malformed_call_not_a_500(url, switch, db, bad):
    """Arguments no JSON can hold: the client gets the call with no arguments; the server, running it, shows the
    model why the search did not run."""
    script(switch, Call(bad))
    r = client(url).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {}
    policy = script(switch, Call(bad), Assistant("请换个说法。"))
    r = client(url).chat.completions.create(model="tiny", messages=ASK)
    assert r.choices[0].message.content == "请换个说法。"
    assert "could not be read" in policy.histories[1][-1].records[0]["error"]


def test_a_body_over_the_limit_is_a_413(url, switch):
    script(switch)
    with pytest.raises(openai.APIStatusError) as info:
        client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 70_000}])
    assert info.value.status_code == 413 and info.value.body["code"] == "body_too_large"

    def chunks():  # no Content-Length: refused while it is read
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "65536 bytes" in r.json()["error"]["message"]


def test_max_tokens_stop_and_usage_with_a_real_model(tiny_url, tiny):
    r = client(tiny_url).chat.completions.create(model="tiny", messages=ASK, max_tokens=2)
    assert r.usage.completion_tokens <= 2 and r.usage.total_tokens == r.usage.prompt_tokens + 2
    assert r.usage.prompt_tokens == len(tiny.generator.prompt_ids([User(ASK[0]["content"])]))
    whole = client(tiny_url).chat.completions.create(model="tiny", messages=ASK)
    assert r.choices[0].finish_reason == "length" and whole.usage.completion_tokens > 2
    with pytest.raises(openai.BadRequestError) as info:
        client(tiny_url).chat.completions.create(model="tiny", messages=ASK, max_tokens=7)
    assert info.value.body["param"] == "max_tokens" and "--max-new-tokens" in info.value.body["message"]


def test_the_prompt_token_limit_is_a_400_naming_it(tiny_url):
    with pytest.raises(openai.BadRequestError) as info:
        client(tiny_url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "酒店" * 400}])
    body = info.value.body
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert "limit of 300" in body["message"]


def test_sampling_is_seeded_and_temperature_0_is_greedy(tiny_url):
    def ask(**options) -> str:
        r = client(tiny_url).chat.completions.create(model="tiny", messages=ASK, **options)
        return r.choices[0].message.content or r.choices[0].message.tool_calls[0].function.arguments

    greedy = ask()
    assert ask(temperature=0, seed=5) == greedy and ask(temperature=0, top_p=0.1) == greedy
    hot = [ask(temperature=2, seed=s) for s in (1, 2, 3, 1)]
    assert hot[0] == hot[3] and len(set(hot)) > 1  # the same seed, the same answer; other seeds differ


class Gate:
    """A policy that holds each turn until `open` is set (a long generation in progress)."""

    def __init__(self):
        self.open, self.entered = threading.Event(), threading.Event()

    def next_turn(self, history, options=None):
        self.entered.set()
        assert self.open.wait(30)
        return ScriptedPolicy([Assistant("好了。")]).next_turn(history, options)


def test_a_full_queue_is_a_503_with_retry_after_and_parsing_does_not_wait_for_the_model(db):
    gate = Gate()
    with LiveServer(create_app(gate, db, ServerConfig(max_queue=1))) as u:
        done = {}
        first = threading.Thread(target=lambda: done.update(r=client(u).chat.completions.create(model="t",
                                                                                                messages=ASK)))
        first.start()
        assert gate.entered.wait(30)
        with pytest.raises(openai.InternalServerError) as info:
            client(u).chat.completions.create(model="t", messages=ASK)
        assert info.value.status_code == 503 and info.value.body["code"] == "server_overloaded"
        assert int(info.value.response.headers["retry-after"]) >= 1
        r = httpx.post(f"{u}/v1/chat/completions", content=b"{broken")  # read and refused while the model is busy
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        gate.open.set()
        first.join(30)
        assert done["r"].choices[0].message.content == "好了。"
        script_ok = client(u).chat.completions.create(model="t", messages=ASK)  # the place was given back
        assert script_ok.choices[0].message.content == "好了。"


def test_a_stream_whose_call_turns_unreadable_ends_with_an_error_event():
    """Arguments already sent cannot be taken back: when the finished call does not continue them, the stream ends
    with OpenAI's error event, not a finish chunk whose pieces would not join into the call."""
    from tooltune.bot.api import ChunkStream

    def events(texts):
        return [json.loads(t[len("data: "):]) for t in texts if t != "data: [DONE]\n\n"]

    def finished(arguments):
        return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "search_hotels", "arguments": arguments}}]},
            "finish_reason": "tool_calls"}], "usage": {}}

    for final, ok in (('{"type": "经济型", "rating_range_lower": 4.5}', True), ("{}", False)):
        stream = ChunkStream("chatcmpl-1", "m", executed=False)
        sent = events(stream.partial("call", "{", "search_hotels") + stream.partial("call", '{"type": "经济型"',
                                                                                        "search_hotels"))
        last = events(stream.finish(finished(final)))
        if ok:
            pieces = [d["function"]["arguments"] for e in sent + last for c in e["choices"]
                      for d in c["delta"].get("tool_calls") or []]
            assert "".join(pieces) == final and last[-1]["choices"][0]["finish_reason"] == "tool_calls"
        else:
            assert last[-1]["error"]["code"] == "malformed_call"
