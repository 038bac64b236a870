"""The serving engine: `Generator.generate_rows` (rows with their own limits, streamed text), `BatchingPolicy`
(concurrent turns decoded together, tokenized outside the scheduler), and real streaming through the server: the
first chunk leaves while the model is still writing."""

from __future__ import annotations

import dataclasses
import json
import threading

import openai
import pytest
import torch

from bot_support import LiveServer, real_tiny_policy, streaming_server
from tooltune.bot import GeneratorPolicy
from tooltune.bot.engine import BatchingPolicy
from tooltune.bot.policy import TurnOptions
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, User
from tooltune.inference import GenerationConfig, Generator, Request

ASKS = ["找一家经济型酒店", "有没有评分4.5以上的豪华型酒店", "谢谢", "北京的酒店"]
ARGS = {"type": "豪华型", "rating_range_lower": 4.8}
TOOLS = [{"type": "function", "function": HOTEL_TOOL.to_dict()}]


@pytest.fixture(scope="module")
def tiny():
    return real_tiny_policy("llama2", max_new_tokens=8).generator


def test_rows_decode_as_predict_does_with_their_own_limits(tiny):
    histories = [[User(a)] for a in ASKS]
    expected = tiny.predict(histories)  # one batch of all four (batch_size 8)
    rows = [Request(tiny.prompt_ids(h), tiny.tools, 8) for h in histories]
    got = tiny.generate_rows(rows)
    assert [p.raw for p in got] == [p.raw for p in expected]
    assert [p.new_tokens for p in got] == [p.new_tokens for p in expected]
    short = tiny.generate_rows([Request(rows[0].prompt, tiny.tools, 3), rows[1]])
    assert short[0].new_tokens <= 3 and expected[0].raw.startswith(short[0].raw)
    assert short[1].raw == expected[1].raw  # a neighbour's limit does not cut this row
    stop = expected[1].raw[2:4]
    cut = tiny.generate_rows([Request(rows[1].prompt, tiny.tools, 8, stop=(stop,))])[0]
    assert cut.raw == expected[1].raw[:expected[1].raw.find(stop)]


def test_each_row_streams_its_text_and_can_stop(tiny):
    seen: dict[int, list[str]] = {0: [], 1: []}
    rows = [Request(tiny.prompt_ids([User(a)]), tiny.tools, 8, on_text=seen[k].append) for k, a in enumerate(ASKS[:2])]
    preds = tiny.generate_rows(rows)
    for k, pred in enumerate(preds):
        texts = seen[k]
        assert len(texts) >= 2 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
        assert pred.raw.startswith(texts[-1])
    calls = []
    stopped = tiny.generate_rows([Request(rows[0].prompt, tiny.tools, 8, on_text=lambda t: (calls.append(t), False)[1])])
    assert len(calls) == 1 and stopped[0].new_tokens == 1  # the listener said stop after the first token


def test_seeded_sampling_repeats(tiny):
    row = Request(tiny.prompt_ids([User(ASKS[0])]), tiny.tools, 8)
    before = torch.random.get_rng_state()
    a, b = (tiny.generate_rows([row], GenerationConfig(temperature=1.5, seed=7))[0].raw for _ in range(2))
    assert a == b and torch.equal(torch.random.get_rng_state(), before)  # torch's own generator untouched
    assert a != tiny.generate_rows([row])[0].raw  # drawn, not greedy


class HeldGenerator:
    """A Generator whose first batch waits until `release` is set, counting the prompts tokenized meanwhile."""

    def __init__(self, inner: Generator):
        self.inner = inner
        self.release = threading.Event()
        self.started = threading.Event()
        self.tokenized_while_held = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def full_prompt_ids(self, *args, **kwargs):
        if self.started.is_set() and not self.release.is_set():
            self.tokenized_while_held += 1
        return self.inner.full_prompt_ids(*args, **kwargs)

    def generate_rows(self, rows, sampling=None):
        self.started.set()
        assert self.release.wait(30)
        return self.inner.generate_rows(rows, sampling)


def waiting(policy: BatchingPolicy, count: int) -> None:
    while len(policy._waiting) < count:
        threading.Event().wait(0.01)


def test_concurrent_turns_are_batched_and_answer_as_alone(tiny):
    alone = [GeneratorPolicy(tiny).next_turn([User(a)], TurnOptions(max_new_tokens=8)).raw for a in ASKS]
    held = HeldGenerator(tiny)
    policy = BatchingPolicy(held, max_batch=8)
    answers: dict[int, str] = {}

    def ask(k: int) -> None:
        answers[k] = policy.next_turn([User(ASKS[k])]).raw

    threads = [threading.Thread(target=ask, args=(0,))]
    threads[0].start()
    assert held.started.wait(30)  # the first turn holds the model; the others wait behind it
    threads += [threading.Thread(target=ask, args=(k,)) for k in (1, 2, 3)]
    for t in threads[1:]:
        t.start()
    waiting(policy, 3)
    assert held.tokenized_while_held == 3  # their prompts were tokenized while the model was busy
    held.release.set()
    for t in threads:
        t.join(30)
    assert policy.batches == [1, 3] and answers == dict(enumerate(alone))


def test_a_seeded_request_is_not_batched_with_others(tiny):
    held = HeldGenerator(tiny)
    policy = BatchingPolicy(held, max_batch=8)
    threads = [threading.Thread(target=policy.next_turn, args=([User(ASKS[0])],))]
    threads[0].start()
    assert held.started.wait(30)
    options = [TurnOptions(temperature=1.0, seed=1), TurnOptions(), TurnOptions()]
    threads += [threading.Thread(target=policy.next_turn, args=([User(a)], o)) for a, o in zip(ASKS[1:], options)]
    for t in threads[1:]:
        t.start()
    waiting(policy, 3)
    held.release.set()
    for t in threads:
        t.join(30)
    assert sorted(policy.batches) == [1, 1, 2]


def test_a_reply_streams_while_it_is_generated(db):
    reply = "为您推荐北京的一家豪华型酒店，评分很高。"
    model, app = streaming_server(db, Assistant(reply), pause_at=12)
    with LiveServer(app) as url:
        stream = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "找酒店"}], stream=True,
            stream_options={"include_usage": True})
        chunks = iter(stream)
        got = ""
        while not got:  # content arrives while the model is paused mid-reply
            chunk = next(chunks)
            got += chunk.choices[0].delta.content or "" if chunk.choices else ""
        assert not model.go.is_set() and model.written <= 12 and reply.startswith(got) and got != reply
        model.go.set()
        rest = list(chunks)
    text = got + "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == reply and [c.choices[0].finish_reason for c in rest if c.choices][-1] == "stop"
    assert rest[-1].usage.completion_tokens == len(model.scripts[0]) - 1  # the end token is not counted


def test_call_arguments_stream_while_the_call_is_generated(db):
    model, app = streaming_server(db, Call(ARGS), pause_at=20)  # the call is 37 tokens, its first pair 17
    with LiveServer(app) as url:
        stream = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "找豪华型酒店"}], tools=TOOLS, stream=True)
        chunks = iter(stream)
        deltas = []
        while "豪华型" not in "".join(d.function.arguments or "" for d in deltas):
            deltas += next(chunks).choices[0].delta.tool_calls or []
        assert not model.go.is_set() and model.written <= 20  # the model has not written the call's end yet
        assert deltas[0].id.startswith("call_") and deltas[0].function.name == "search_hotels"
        model.go.set()
        rest = list(chunks)
    deltas += [d for c in rest for d in c.choices[0].delta.tool_calls or []]
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == ARGS
    assert rest[-1].choices[0].finish_reason == "tool_calls"


def test_the_web_endpoint_streams_the_reply_then_the_answer(db):
    import httpx

    reply = "为您推荐这家酒店。"
    model, app = streaming_server(db, Assistant(reply), pause_at=1000)
    model.go.set()
    with LiveServer(app) as url:
        raw = httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "你好"}],
                                                  "stream": True}).text
    events = [json.loads(e[len("data: "):]) for e in raw.split("\n\n") if e and e != "data: [DONE]"]
    partials = [e["reply"] for e in events if "reply" in e]
    assert len(partials) > 1 and partials[-1] == reply and events[-1]["answer"]["reply"] == reply


def test_a_client_that_goes_away_stops_its_turn(db):
    import httpx

    reply = "为您推荐北京的一家豪华型酒店，评分很高，价格也合适，交通便利。"
    model, app = streaming_server(db, Assistant(reply), pause_at=20)
    with LiveServer(app) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "找酒店"}], "stream": True}, timeout=30) as r:
            for line in r.iter_lines():
                if '"content": "为' in line:  # the reply has begun: the client leaves
                    break
        for _ in range(3000):  # the server sees the client go (within 30 s)
            if app.state.disconnects:
                break
            threading.Event().wait(0.01)
        assert app.state.disconnects == 1
        model.go.set()  # it cannot have passed token 20 before this: it stopped there or before
        while app.state.policy._busy:
            threading.Event().wait(0.01)
    assert model.written <= 21 < len(model.scripts[0])  # the turn stopped at the next token, not at its end


def test_the_stop_string_table_is_built_once_per_generator(tiny, monkeypatch):
    """`generate(stop_strings=...)` builds a table over the whole vocabulary at every call (seconds for Gemma's)."""
    from transformers.generation import stopping_criteria

    built = []
    init = stopping_criteria.StopStringCriteria.__init__
    monkeypatch.setattr(stopping_criteria.StopStringCriteria, "__init__",
                        lambda self, *a, **k: built.append(1) or init(self, *a, **k))
    fresh = Generator(tiny.model, tiny.tokenizer, tiny.fmt, config=tiny.config)
    assert fresh.text_stops  # llama2 stops at "\n\n[Round", which is no single token
    expected = [p.raw for p in tiny.predict([[User(a)] for a in ASKS])]
    assert [p.raw for p in fresh.predict([[User(a)] for a in ASKS])] == expected
    fresh.predict([[User(ASKS[0])]])
    fresh.generate_rows([Request(fresh.prompt_ids([User(ASKS[1])]), fresh.tools, 8)])
    assert len(built) == 1


def test_rows_under_a_domain_vocabulary_decode_as_predict_does(tiny):
    """`output_vocab` restricts generate_rows as it restricts predict (the vocabulary, end tokens, prompts' ids)."""
    vocab = frozenset(range(0, len(tiny.tokenizer), 3))
    restricted = Generator(tiny.model, tiny.tokenizer, tiny.fmt,
                           config=dataclasses.replace(tiny.config, output_vocab=vocab))
    histories = [[User(a)] for a in ASKS]
    expected = restricted.predict(histories)
    got = restricted.generate_rows([Request(restricted.prompt_ids(h), restricted.tools, 8) for h in histories])
    assert [p.raw for p in got] == [p.raw for p in expected]
    assert [p.raw for p in got] != [p.raw for p in tiny.predict(histories)]  # the restriction changed something
    assert tiny.model.get_output_embeddings().weight.shape[0] == len(tiny.tokenizer)  # the whole head is back
