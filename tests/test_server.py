"""`tooltune serve`: the official `openai` client against a live server (plain, streaming, tool calls, errors, auth)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch

from bot_support import ARGS, ASK, TOOLS, LiveServer, ScriptedPolicy, live_app, real_tiny_policy
from tooltune.bot.server import check_bind, create_app
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Result, User
from tooltune.errors import ToolTuneError

KEY = "sk-test-123"


@pytest.fixture(scope="module")
def url(db, switch):
    with live_app(switch, db) as u:
        yield u


@pytest.fixture(scope="module")
def keyed(db, switch):
    """A second server: API key required, every call executed by the server."""
    with live_app(switch, db, api_key=KEY, execute_tools=True) as u:
        yield u


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def script(switch, *turns, malformed=()) -> ScriptedPolicy:
    switch.inner = ScriptedPolicy(list(turns), malformed)
    return switch.inner


def test_models(url):
    assert [m.id for m in client(url).models.list()] == ["tiny"]


def test_plain_reply(url, switch):
    policy = script(switch, Assistant("您好，请问有什么需要？"))
    r = client(url).chat.completions.create(model="anything", messages=[{"role": "user", "content": "你好"}],
                                            temperature=0.7)
    choice = r.choices[0]
    assert choice.message.content == "您好，请问有什么需要？" and choice.finish_reason == "stop"
    assert r.model == "tiny" and not choice.message.tool_calls
    assert policy.histories == [(User("你好"),)]


def test_tool_call_then_the_client_returns_the_records(url, switch, db):
    script(switch, Call(ARGS))
    r = client(url).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS)
    choice = r.choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert call.function.name == "search_hotels" and json.loads(call.function.arguments) == ARGS
    records = db.search(ARGS, limit=2).records
    policy = script(switch, Assistant("推荐这家。"))
    follow = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(records, ensure_ascii=False)}]
    r2 = client(url).chat.completions.create(model="tiny", messages=follow, tools=TOOLS)
    assert r2.choices[0].message.content == "推荐这家。"
    assert policy.histories[0][-2:] == (Call(ARGS), Result(records))


def test_without_tools_or_with_tool_choice_none_the_server_runs_the_search(url, switch, db):
    for extra in ({}, {"tools": TOOLS, "tool_choice": "none"}):
        policy = script(switch, Call(ARGS), Assistant("推荐这家。"))
        r = client(url).chat.completions.create(model="tiny", messages=ASK, **extra)
        assert r.choices[0].message.content == "推荐这家。" and not r.choices[0].message.tool_calls
        assert policy.histories[1][-1] == Result(db.search(ARGS, limit=2).records)


def test_streaming_text_and_tool_call(url, switch):
    reply = "为您推荐北京的一家豪华型酒店，评分很高，价格合适。"
    script(switch, Assistant(reply))
    stream = client(url).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "stop"
    script(switch, Call(ARGS))
    chunks = list(client(url).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, stream=True))
    deltas = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "search_hotels"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the raw stream: server-sent events ending with [DONE]
    script(switch, Assistant("好的。"))
    raw = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": ASK, "stream": True}).text
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


@pytest.mark.parametrize("body,param,text", [
    ({"model": "tiny"}, "messages", "missing required field 'messages'"),
    ({"messages": ASK + [{"role": "system", "content": "x"}, ASK[0]]}, "messages[1].role", "only at the start"),
    ({"messages": ASK + [{"role": "assistant", "content": "hi"}]}, "messages[1]", "last message"),
    ({"messages": ASK, "tool_choice": "required", "tools": TOOLS}, "tool_choice", "not supported"),
    ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "book_flight"}}]}, "tools[0]",
     "knows only search_hotels"),
    ({"messages": ASK, "n": 2}, "n", "n=1"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "text content"),
    ({"messages": [{"role": "tool", "tool_call_id": "c", "content": "[]"}]}, "messages[0].tool_call_id", "answers"),
])
def test_bad_requests_get_an_openai_error(url, switch, body, param, text):
    script(switch)  # nothing may be generated
    if "messages" in body:
        with pytest.raises(openai.BadRequestError) as info:
            client(url).chat.completions.create(**{"model": "tiny", **body})
        status, error = info.value.status_code, info.value.body
    else:  # the client itself refuses to send this one
        r = httpx.post(f"{url}/v1/chat/completions", json=body)
        status, error = r.status_code, r.json()["error"]
    assert status == 400 and set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and text in error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_and_unknown_routes(url):
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(f"{url}/v1/nothing")
    assert r.status_code == 404 and "/v1/nothing" in r.json()["error"]["message"]


class Boom:
    def next_turn(self, history, options=None):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failing_generation_is_a_500_and_the_server_keeps_serving(url, switch):
    switch.inner = Boom()
    with pytest.raises(openai.InternalServerError) as info:
        client(url).chat.completions.create(model="tiny", messages=ASK)
    assert info.value.status_code == 500 and "CUDA out of memory (simulated)" in info.value.body["message"]
    assert info.value.body["type"] == "server_error"
    script(switch, Assistant("我还在。"))
    assert client(url).chat.completions.create(model="tiny", messages=ASK).choices[0].message.content == "我还在。"


def test_api_key_and_execute_tools(keyed, switch, db):
    with pytest.raises(openai.AuthenticationError) as info:
        client(keyed, "sk-wrong").models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    assert httpx.post(f"{keyed}/v1/chat/completions", json={"messages": ASK}).status_code == 401
    assert httpx.get(f"{keyed}/").status_code == 200  # the page is public; its API calls need the key
    policy = script(switch, Call(ARGS), Assistant("推荐这家。"))
    r = client(keyed, KEY).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS)
    assert r.choices[0].message.content == "推荐这家。" and not r.choices[0].message.tool_calls
    assert policy.histories[1][-1] == Result(db.search(ARGS, limit=2).records)
    script(switch, *[Call(ARGS)] * 4)  # past the bound (3): an empty answer, finish_reason "length"
    r = client(keyed, KEY).chat.completions.create(model="tiny", messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == ""


class Overlap:
    """Counts how many generations run at once (the server's lock must keep it at one)."""

    def __init__(self):
        self.active = self.most = self.calls = 0
        self.guard = threading.Lock()

    def next_turn(self, history, options=None):
        with self.guard:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)
        time.sleep(0.02)
        with self.guard:
            self.active -= 1
        return ScriptedPolicy([Assistant(f"回答{history[-1].content}")]).next_turn(history, options)


def test_concurrent_requests_are_served_one_generation_at_a_time(url, switch):
    switch.inner = overlap = Overlap()
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        r = client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": str(i)}])
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {i: f"回答{i}" for i in range(12)} and overlap.calls == 12 and overlap.most == 1


def _greedy_by_hand(model, tok, prompt: list[int], steps: int) -> tuple[str, int]:
    """Greedy decoding written out (no `generate`, no KV cache): argmax of the last position, never <pad>, up to eos."""
    import torch

    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([prompt + new])).logits[0, -1]
            if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
                logits[tok.pad_token_id] = float("-inf")
            token = int(logits.argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
    return tok.decode(new), len(new)


def test_a_real_tiny_model_behind_the_server(db):
    """The server answers with what the model writes: the same turn as greedy decoding by hand on the same prompt."""
    from tooltune.formats import FORMATS

    policy = real_tiny_policy("llama2", max_new_tokens=6)
    with LiveServer(create_app(policy, db)) as u:
        r = client(u).chat.completions.create(model="tiny-llama", messages=ASK, tools=TOOLS)
    choice = r.choices[0]
    gen = policy.generator
    prompt = gen.prompt_ids([User(ASK[0]["content"])], (HOTEL_TOOL,))
    text, written = _greedy_by_hand(gen.model, gen.tokenizer, prompt, 6)
    turn = FORMATS["llama2"].parse(text.split("\n\n[Round")[0]).turn
    assert text  # the untrained model does write something in 6 tokens
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == written
    if isinstance(turn, Call):
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert json.loads(choice.message.tool_calls[0].function.arguments) == turn.arguments
    else:
        assert choice.finish_reason == ("length" if written == 6 else "stop") and not choice.message.tool_calls
        assert choice.message.content == turn.content


def test_binding_beyond_localhost_needs_a_key():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "k")
    with pytest.raises(ToolTuneError, match="refusing to listen on 0.0.0.0 without an API key"):
        check_bind("0.0.0.0", None)
    for blank in ("", " ", "\t\n"):
        with pytest.raises(ToolTuneError, match="empty or whitespace"):
            check_bind("0.0.0.0", blank)


def test_serve_command_wires_the_options(tmp_path, db, monkeypatch):
    """`tooltune serve RUN ...` loads the saved model and serves it with the given options (run here in-process)."""
    from bot_support import save_tiny_run
    from tooltune import cli

    run = save_tiny_run(tmp_path / "run", "llama2")
    served = {}
    monkeypatch.setattr("tooltune.bot.server.serve", lambda app, host, port: served.update(app=app, host=host,
                                                                                          port=port))
    rc = cli.main(["serve", str(run), "--db", str(db.path), "--host", "0.0.0.0", "--port", "8123", "--api-key", KEY,
                   "--execute-tools", "--max-new-tokens", "4", "--device", "cpu", "--no-feedback", "--max-batch", "2",
                   "--max-body-bytes", "5000", "--max-prompt-tokens", "100"])
    assert rc == 0 and served["host"] == "0.0.0.0" and served["port"] == 8123
    engine = served["app"].state.policy
    assert engine.max_batch == 2 and engine.generator.max_prompt == 100 and engine.max_new_tokens == 4
    assert next(engine.generator.model.parameters()).dtype == torch.float32  # the CPU default for decoding
    with LiveServer(served["app"]) as u:
        big = httpx.post(f"{u}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 6000}]},
                         headers={"authorization": f"Bearer {KEY}"})
        assert big.status_code == 413
        assert [m.id for m in client(u, KEY).models.list()] == ["run"]
        r = client(u, KEY).chat.completions.create(model="run", messages=ASK, tools=TOOLS)
        assert r.choices[0].finish_reason in ("stop", "length") and not r.choices[0].message.tool_calls
        with pytest.raises(openai.AuthenticationError):
            client(u, "nope").models.list()
    assert cli.main(["serve", str(run), "--host", "0.0.0.0"]) == 2  # no key: refused before loading anything
    assert cli.main(["serve", str(run), "--api-key", "  "]) == 2  # a blank key is no key
    assert cli.main(["serve", str(run), "--max-queue", "0"]) == 2
    assert cli.main(["serve", str(run), "--domain-vocab"]) == 2  # a saved model has no training data to read


def test_a_conversation_too_long_for_the_model_is_a_400(url, switch):
    from tooltune.formats import SampleTooLong

    class TooLong:
        def next_turn(self, history, options=None):
            raise SampleTooLong("9000 tokens, and no cut keeps a whole trained turn within max_length=2048")

    switch.inner = TooLong()
    with pytest.raises(openai.BadRequestError) as info:
        client(url).chat.completions.create(model="tiny", messages=ASK)
    assert info.value.body["code"] == "context_length_exceeded" and "9000 tokens" in info.value.body["message"]


def test_the_web_endpoint_checks_its_body(url, switch, db):
    r = httpx.post(f"{url}/api/chat", json={"text": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    script(switch, Call(ARGS), Assistant("推荐这家。"))
    answer = httpx.post(f"{url}/api/chat", json={"messages": ASK}).json()
    assert answer["reply"] == "推荐这家。" and answer["searches"][0]["records"] == db.search(ARGS, limit=2).records
    assert [m["role"] for m in answer["messages"]] == ["user", "assistant", "tool", "assistant"]
