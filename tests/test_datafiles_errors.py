"""What the readers refuse and where they say it is; detection; atomic writes; the `data convert` command."""

from __future__ import annotations

import json

import pytest
from conftest import read_jsonl

from tooltune.cli import main
from tooltune.dialogue import Assistant, Call, Dialogue, Result, User
from tooltune.errors import InputError
from tooltune.datafiles import FILE_FORMATS, detect_format, read_dialogues, read_file, write_dialogues
from tooltune.datafiles.chatglm3 import FILLER

GOOD = Dialogue((User("找酒店"), Call({"type": "经济型"}), Result([{"name": "A", "price": 300.0}]), Assistant("A")))


def _lines(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _good_record(fmt, tmp_path):
    out = tmp_path / f"good.{fmt}.jsonl"
    write_dialogues([GOOD], out, fmt)
    return read_jsonl(out)[-1]


def _chatglm3(conv):
    return {"tools": [], "conversations": conv}


def _llama2(context, response):
    return {"context": json.dumps(context, ensure_ascii=False), "response": json.dumps(response, ensure_ascii=False)}


U = {"role": "user", "content": "hi"}
# (format, a bad record, the field its error must name, words of the message)
BAD = [
    ("seed", [U, {"role": "search", "arguments": [1]}], "turns[1].arguments", "must be an object"),
    ("seed", [{"role": "assistant", "content": "x"}], "turns[0]", "must start with a user turn"),
    ("chatglm3", _chatglm3([U, {"role": "tool", "name": "search_hotels"}]), "conversations[1]",
     "missing key 'parameters'"),
    ("chatglm3", _chatglm3([U, {"role": "tool", "name": "s", "parameters": {}, "observation": "none"}]),
     "conversations[1].observation", "list of objects"),
    ("chatglm3", _chatglm3([U, {"role": "observation", "content": "x"}]), "conversations[1].role", "unknown role"),
    ("chatglm3", {"tools": ["[not json"], "conversations": [U]}, "tools[0]", "not valid JSON"),
    ("chatglm3", _chatglm3([U, {"role": "assistant", "content": "ok"},
                            {"role": "tool", "name": "s", "parameters": {}}]),
     "conversations[2]", "a call turn cannot follow a assistant"),
    ("llama2", _llama2([U], {"role": "user", "content": "again"}), "response.role", "must be a search or"),
    ("llama2", _llama2([U, {"role": "return", "records": []}], {"role": "assistant", "content": "x"}),
     "context[1]", "cannot follow a user"),
    ("llama2", {"context": "[]", "response": "{}"}, "response.role", "unknown role"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{}"}]},
     "conversations[1].value", "missing key 'name'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "a"}, {"from": "observation", "value": "[]"}]},
     "conversations[1]", "cannot follow a user"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "a"}], "system": "be nice"}, "system", "not supported"),
    ("sharegpt", {"conversations": [{"from": "user", "value": "a"}]}, "conversations[0].from", "unknown 'from'"),
    ("openai", {"messages": [U, {"role": "assistant", "content": "let me look", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "s", "arguments": "{}"}}]}]},
     "messages[1].content", "no text content"),
    ("openai", {"messages": [U, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "s", "arguments": "{}"}}] * 2}]},
     "messages[1].tool_calls", "parallel"),
    ("openai", {"messages": [U, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "s", "arguments": "{\"a\": 1"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    ("openai", {"messages": [U, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "s", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "other", "content": "[]"}]}, "messages[2].tool_call_id", "answers 'other' and follows the call 'c'"),
    ("openai", {"messages": [U, {"role": "tool", "tool_call_id": "c", "content": "[]"}]}, "messages[1].tool_call_id",
     "follows no call"),
    ("openai", {"messages": [{"role": "system", "content": "s"}, U]}, "messages[0].role", "not supported"),
]


@pytest.mark.parametrize("fmt, record, field, words", BAD, ids=[f"{b[0]}:{b[2]}" for b in BAD])
def test_invalid_records_name_file_line_and_field(tmp_path, fmt, record, field, words):
    path = _lines(tmp_path / "in.jsonl", [_good_record(fmt, tmp_path), record])
    with pytest.raises(InputError) as e:
        read_dialogues(path, fmt)
    assert (e.value.where, e.value.field) == (f"{path}:2", field)
    assert words in e.value.message


def test_chatglm3_drops_the_filler_only_right_before_a_tool_turn(tmp_path):
    tool = {"role": "tool", "name": "search_hotels", "parameters": {"type": "经济型"}}
    path = _lines(tmp_path / "f.jsonl", [_chatglm3([U, {"role": "assistant", "content": FILLER}, U,
                                                    {"role": "assistant", "content": FILLER}, tool]),
                                         _chatglm3([U, tool])])
    report = read_file(path)
    assert report.counts == {"filler turns dropped": 1,
                             "tool turns without the filler before them (writing adds it)": 1}
    assert report.dialogues[0].turns == (User("hi"), Assistant(FILLER), User("hi"), Call({"type": "经济型"}))


def test_every_format_is_tested_for_bad_input():
    assert {b[0] for b in BAD} == set(FILE_FORMATS)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_skip_invalid_keeps_the_rest_and_counts(tmp_path, fmt):
    good = _good_record(fmt, tmp_path)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([json.dumps(good, ensure_ascii=False), "{broken", "",
                               json.dumps(good, ensure_ascii=False)]) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_file(path, fmt)
    assert e.value.where == f"{path}:2" and "not valid JSON" in e.value.message
    report = read_file(path, fmt, skip_invalid=True)
    assert len(report.dialogues) == 2 and [err.where for err in report.skipped] == [f"{path}:2"]


def test_detection_refuses_what_no_format_claims(tmp_path):
    with pytest.raises(InputError, match=r"keys \['text'\].*--from"):
        detect_format(_lines(tmp_path / "x.jsonl", [{"text": "hi"}]))
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        detect_format(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="no such file"):
        read_file(tmp_path / "missing.jsonl")


def test_reads_hand_written_openai_and_sharegpt(tmp_path):
    """Records as other tools write them (ids, null content, arguments as an object) read into the same dialogue."""
    call = {"id": "call_Xy9", "type": "function", "function": {"name": "search_hotels",
                                                              "arguments": "{\"type\": \"经济型\"}"}}
    openai = {"messages": [{"role": "user", "content": "找酒店"},
                           {"role": "assistant", "content": None, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": "call_Xy9",
                            "content": "[{\"name\": \"A\", \"price\": 300.0}]"},
                           {"role": "assistant", "content": "A"}]}
    sharegpt = {"conversations": [{"from": "human", "value": "找酒店"},
                                  {"from": "function_call",
                                   "value": "[{\"name\": \"search_hotels\", \"arguments\": {\"type\": \"经济型\"}}]"},
                                  {"from": "observation", "value": "[{\"name\": \"A\", \"price\": 300.0}]"},
                                  {"from": "gpt", "value": "A"}]}
    for fmt, record in (("openai", openai), ("sharegpt", sharegpt)):
        path = _lines(tmp_path / f"{fmt}.jsonl", [record])
        assert detect_format(path) == fmt
        [d] = read_dialogues(path)
        assert d.turns == GOOD.turns and d.tools == ()


def test_written_records_have_the_documented_shape(tmp_path):
    openai = _good_record("openai", tmp_path)
    assert openai["messages"][1] == {"role": "assistant", "tool_calls": [
        {"id": "call_0", "type": "function",
         "function": {"name": "search_hotels", "arguments": "{\"type\": \"经济型\"}"}}]}
    assert openai["messages"][2] == {"role": "tool", "tool_call_id": "call_0",
                                     "content": "[{\"name\": \"A\", \"price\": 300.0}]"}
    assert openai["tools"][0]["type"] == "function" and openai["tools"][0]["function"]["name"] == "search_hotels"
    sharegpt = _good_record("sharegpt", tmp_path)
    assert [m["from"] for m in sharegpt["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert json.loads(sharegpt["conversations"][1]["value"]) == {"name": "search_hotels", "arguments": {"type": "经济型"}}
    assert json.loads(sharegpt["tools"])[0]["name"] == "search_hotels"


def test_a_failing_write_leaves_the_old_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    unserialisable = Dialogue((User("a"), Call({"facilities": {"a set"}})))
    for fmt in FILE_FORMATS:
        with pytest.raises(TypeError):
            write_dialogues([GOOD, unserialisable], out, fmt)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left behind


def test_convert_command(tmp_path, capsys, course_dir):
    out = tmp_path / "test.sharegpt.jsonl"
    assert main(["data", "convert", str(course_dir / "test.chatglm3.jsonl"), str(out), "--to", "sharegpt"]) == 0
    err = capsys.readouterr().err
    assert "read 201 dialogues" in err and "filler turns dropped: 242" in err and "wrote 201 records" in err
    back = tmp_path / "back.chatglm3.jsonl"
    assert main(["data", "convert", str(out), str(back), "--to", "chatglm3", "--from", "sharegpt"]) == 0
    assert back.read_bytes() == (course_dir / "test.chatglm3.jsonl").read_bytes()


def test_convert_command_fails_cleanly_or_skips(tmp_path, capsys):
    good = _good_record("openai", tmp_path)
    src = _lines(tmp_path / "in.jsonl", [good, {"messages": [{"role": "bot", "content": "x"}]}, good])
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), str(out), "--to", "seed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tooltune: error: {src}:2: messages[0].role: unknown role 'bot'") and not out.exists()
    assert main(["data", "convert", str(src), str(out), "--to", "seed", "--skip-invalid"]) == 0
    assert "invalid records skipped: 1" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 2
