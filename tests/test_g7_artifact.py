"""Run G7's adapter, committed under bench/artifacts/g7, loads from a clean clone onto the base that `tooltune model
prepare gemma3-270m` writes, and answers through `tooltune eval`, the chat's policy and the OpenAI-compatible
server. Expected calls are the dev file's gold labels and the search's own results, not outputs recorded from the
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooltune.cli import main

ARTIFACT = Path(__file__).parents[1] / "bench" / "artifacts" / "g7"
FIRST_UNITS = 6
"""The first dev turn units (`eval --limit`): G7 writes every call as the gold label has it but one (below)."""
KNOWN_MISSES = {"dev:1:1"}
"""G7's one miss among them (its dev evaluation, bench/results/learning_curve.md): "行李寄存" asked for, and a
paraphrase of it ("酒店各处提供行李寄存") added as a second facility."""


def test_the_artifact_names_no_machine_path_and_needs_no_tokenizer_of_its_own():
    cfg = (ARTIFACT / "config.yaml").read_text(encoding="utf-8")
    assert "path: gemma3-270m" in cfg and "train: hotel/v3_chatglm3_llama2/train.chatglm3.jsonl" in cfg
    adapter = json.loads((ARTIFACT / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["base_model_name_or_path"] == "gemma3-270m"
    assert json.loads((ARTIFACT / "run.json").read_text(encoding="utf-8"))["new_special_tokens"] == 0
    assert not (ARTIFACT / "tokenizer.json").exists()
    for path in ARTIFACT.iterdir():
        if path.suffix in (".json", ".yaml", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            assert "/root/" not in text and "/home/" not in text and str(Path.home()) not in text, path


def test_eval_loads_it_and_gets_the_first_dev_turns_right(gemma_base, course_dir, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", str(ARTIFACT), "--data", str(course_dir / "dev.chatglm3.jsonl"), "--out", str(out),
                 "--limit", str(FIRST_UNITS), "--max-new-tokens", "160", "--batch-size", "8", "--domain-vocab",
                 "--dtype", "float32", "--no-task-success"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == FIRST_UNITS
    calls = [r for r in rows if r["gold"]["role"] == "search"]
    replies = [r for r in rows if r["gold"]["role"] == "assistant"]
    assert calls and replies
    exact = [r for r in calls if r["id"] not in KNOWN_MISSES]
    assert exact and [r["pred"] for r in exact] == [r["gold"] for r in exact]  # dicts: order-free, values exact
    for r in calls:
        if r["id"] in KNOWN_MISSES:  # every gold value is there; the miss is one extra facility
            gold, pred = r["gold"]["arguments"], r["pred"]["arguments"]
            assert {k: v for k, v in pred.items() if k != "facilities"} == \
                {k: v for k, v in gold.items() if k != "facilities"}
            assert set(gold["facilities"]) < set(pred["facilities"]), r
    assert all(r["pred"]["role"] == "assistant" and r["pred"]["content"] for r in replies)
    # The first reply answers from the search's result: it names the hotel the dev dialogue's search returned.
    first = json.loads((course_dir / "dev.chatglm3.jsonl").read_text(encoding="utf-8").splitlines()[0])
    returned = next(t for t in first["conversations"] if t["role"] == "tool")["observation"]
    names = [h["name"] for h in (returned if isinstance(returned, list) else json.loads(returned))]
    assert any(name in replies[0]["pred"]["content"] for name in names), (names, replies[0]["pred"])


@pytest.fixture(scope="module")
def policy(gemma_base):
    from tooltune.bot import load_policy

    return load_policy(ARTIFACT, device="cpu", max_new_tokens=160)


ASK = "帮我找一家评分4.5分以上的经济型酒店"
WANT = {"type": "经济型", "rating_range_lower": 4.5}


def test_the_chat_policy_searches_what_was_asked_and_answers_from_the_results(policy, db):
    from tooltune.bot import Session, SessionConfig

    exchange = Session(policy, db, SessionConfig(limit=3)).send(ASK)
    assert exchange.searches and exchange.searches[0].call.arguments == WANT
    found = exchange.searches[0].records
    assert found and exchange.reply and any(h["name"] in exchange.reply for h in found), exchange.reply


def test_the_server_answers_an_openai_client_with_the_same_call(policy, db):
    import openai
    from bot_support import LiveServer

    from tooltune.bot.server import ServerConfig, create_app
    from tooltune.dialogue import HOTEL_TOOL

    with LiveServer(create_app(policy, db, ServerConfig(model_name="g7"))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        r = client.chat.completions.create(model="g7", messages=[{"role": "user", "content": ASK}],
                                           tools=[{"type": "function", "function": HOTEL_TOOL.to_dict()}])
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "search_hotels" and json.loads(call.function.arguments) == WANT
