"""Hostile input, class by class: every reader and command answers `tooltune: error: FILE:LINE: FIELD: ...` and exit
2, never a traceback; nothing it read is lost without a word (the classes of issue 24, each with a test)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tooltune import jsonio
from tooltune.cli import main
from tooltune.errors import InputError
from tooltune.datafiles import read_dialogues, write_dialogues

GOOD = ('{"tools": [], "conversations": [{"role": "user", "content": "找酒店"}, {"role": "tool", "name": '
        '"search_hotels", "parameters": {"type": "经济型"}, "observation": [{"name": "A", "price": 300.0}]}, '
        '{"role": "assistant", "content": "A"}]}')
# (what, a hostile replacement for GOOD's second line, the message it must give, the field it must name)
HOSTILE = [
    ("deep nesting", GOOD.replace('"经济型"', "[" * 1200 + "]" * 1200), "nested more than 100 levels deep", None),
    ("deep nesting the decoder reads", GOOD.replace('"经济型"', "[" * 300 + "]" * 300),
     "nested more than 100 levels deep", "conversations[1].parameters.type"),
    ("a 5000-digit integer", GOOD.replace("300.0", "9" * 5000), "an integer of more than 100 digits", None),
    ("a 200-digit integer", GOOD.replace("300.0", "9" * 200), "an integer of more than 100 digits",
     "conversations[1].observation[0].price"),
    ("a lone surrogate", GOOD.replace("找酒店", "\\udc80"), "lone surrogate", "conversations[0].content"),
    ("NaN", GOOD.replace("300.0", "NaN"), "NaN is not a JSON number", None),
    ("a number out of float range", GOOD.replace("300.0", "1e400"), "inf is not a finite number",
     "conversations[1].observation[0].price"),
    ("a misspelled key", GOOD.replace('"observation"', '"observations"'),
     "unknown key 'observations' (did you mean 'observation'?", "conversations[1].observations"),
]


def _file(tmp_path, second_line):
    path = tmp_path / "in.chatglm3.jsonl"
    path.write_text(GOOD + "\n" + second_line + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("what,line,message,field", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_data_commands_locate_hostile_json(tmp_path, capsys, what, line, message, field):
    path = _file(tmp_path, line)
    with pytest.raises(InputError) as caught:
        read_dialogues(path)
    assert caught.value.where == f"{path}:2" and message in caught.value.message
    if field:
        assert caught.value.field.startswith(field)
    for command in (["data", "convert", str(path), str(tmp_path / "out.jsonl"), "--to", "openai"],
                    ["data", "show", str(path), "--format", "chatglm3", "--index", "0"],
                    ["data", "balance", str(path), str(tmp_path / "bal.jsonl"), "--by", "slot-keys", "--strategy",
                     "augment"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"tooltune: error: {path}:2: ") and message in err, (command, err)
    assert not (tmp_path / "out.jsonl").exists()


def test_bytes_that_are_not_utf8_are_located_by_line(tmp_path, capsys):
    path = tmp_path / "in.chatglm3.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + GOOD.encode().replace("找".encode(), b"\xff", 1) + b"\n")
    assert main(["data", "convert", str(path), str(tmp_path / "out.jsonl"), "--to", "seed"]) == 2
    err = capsys.readouterr().err
    assert f"tooltune: error: {path}:2: not UTF-8 text: byte 0xff at byte column" in err
    doc = tmp_path / "doc.json"
    doc.write_bytes(b'[\n  {"a": 1},\n  {"b": "\xc3"}\n]')
    with pytest.raises(InputError, match="not UTF-8") as caught:
        read_dialogues(doc)
    assert caught.value.where == f"{doc}:3"


def test_a_json_document_names_the_line_of_its_fault(tmp_path):
    doc = tmp_path / "dialogue.json"
    deep = "[" * 2000 + "]" * 2000
    doc.write_text('[\n {"role": "user", "content": "x"},\n {"role": "assistant", "content": ' + deep + "}\n]",
                   encoding="utf-8")
    with pytest.raises(InputError, match="nested more than 100") as caught:
        read_dialogues(doc, "seed")
    assert caught.value.where == f"{doc}:3"


def test_an_unknown_key_is_named_with_the_closest_known_one_in_every_format(tmp_path):
    good = [read_dialogues(_file(tmp_path, GOOD))[0]]
    # one key of each format's records misspelled: (format, the key as written, the misspelling)
    cases = [("seed", '"records"', '"record"'), ("chatglm3", '"parameters"', '"parameter"'),
             ("llama2", '"response"', '"responses"'), ("sharegpt", '"value"', '"valeu"'),
             ("openai", '"tool_call_id"', '"tool_callid"')]
    for fmt, key, typo in cases:
        path = tmp_path / f"good.{fmt}.jsonl"
        write_dialogues(good, path, fmt)
        text = path.read_text(encoding="utf-8")
        assert key in text, fmt
        path.write_text(text.replace(key, typo, 1), encoding="utf-8")
        with pytest.raises(InputError, match=f"unknown key {typo[1:-1]!r} \\(did you mean {key[1:-1]!r}\\?") as e:
            read_dialogues(path, fmt)
        assert e.value.where == f"{path}:1", fmt


def test_extra_keys_are_errors_not_dropped_in_nested_objects(tmp_path):
    record = {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "tool_calls": [{"id": "c0", "type": "function", "function": {
                               "name": "search_hotels", "arguments": "{}", "argumnets": "{\"type\": \"经济型\"}"}}]}]}
    path = tmp_path / "x.openai.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="did you mean 'arguments'") as e:
        read_dialogues(path)
    assert e.value.field == "messages[1].tool_calls[0].function.argumnets"


def test_eval_data_and_report_inputs_are_read_the_same_way(tmp_path, capsys):
    path = _file(tmp_path, HOSTILE[0][1])
    assert main(["eval", str(tmp_path / "no-run"), "--data", str(path), "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.startswith(f"tooltune: error: {path}:2: nested more than 100 levels deep")
    bad = tmp_path / "predictions.jsonl"
    bad.write_text('{"id": "a", "gold": {"role": "assistant", "content": "\\ud800"}, "pred": null, "raw": ""}\n',
                   encoding="utf-8")
    assert main(["report", "--rescore", str(bad)]) == 2
    assert f"{bad}:1: gold.content: holds a lone surrogate" in capsys.readouterr().err
    metrics = tmp_path / "m"
    metrics.mkdir()
    (metrics / "metrics.json").write_text('{"model": "m", "method": "x", "metrics": {"bleu4": ' + "1" * 5000 + "}}")
    assert main(["report", str(metrics)]) == 2
    assert f"{metrics / 'metrics.json'}:1: an integer of more than 100 digits" in capsys.readouterr().err


def test_jsonio_loads_rules():
    assert jsonio.loads(' {"a": [1, 2.5, "x", null, true]} ', "t") == {"a": [1, 2.5, "x", None, True]}
    assert jsonio.loads('"\\ud83d\\ude00"', "t") == "\U0001F600"  # a surrogate pair is one character, fine
    for text, words in [("[1] [2]", "extra data"), ("-Infinity", "not a JSON number"), ('{"a": 1,}', "not valid JSON"),
                        ('{"\\udfff": 1}', "key holds a lone surrogate"), ("1" * 101, "more than 100 digits")]:
        with pytest.raises(InputError, match=words):
            jsonio.loads(text, "t")
    assert jsonio.json_problem({"a": [{1, 2}]}) == ("a[0]", "set is not a JSON value")
    assert jsonio.json_problem({"a": 1j}) == ("a", "complex is not a JSON value")
    assert jsonio.json_problem([...]) == ("[0]", "ellipsis is not a JSON value")
    assert jsonio.json_problem({1: "x"})[1] == "an object key must be a string, got int"
    assert jsonio.scrub_surrogates("a\udc80b") == ("a\ufffdb", 1)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "run.json"
    jsonio.atomic_write_json(path, {"step": 1})
    with pytest.raises(UnicodeEncodeError):
        jsonio.atomic_write_text(path, "half \udc80")
    assert json.loads(path.read_text(encoding="utf-8")) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_db_search_bounds_its_inputs_in_milliseconds(tmp_path, capsys, data_root):
    from tooltune.db import HotelDB, SearchError

    many = "".join(chr(0x4E00 + i) for i in range(1000))
    cases = [({"name": "酒" * 1_000_000}, "name: 1000000 characters; a hotel name has at most 50"),
             ({"name": many}, "name: 1000 characters"),
             ({"price_range_upper": 10**400}, "price_range_upper: an integer of 401 digits is outside 0 to"),
             ({"price_range_upper": int("9" * 99)}, "price_range_upper: an integer of 99 digits is outside 0 to"),
             ({"price_range_lower": -1}, "price_range_lower: -1 is outside 0 to 1,000,000"),
             ({"rating_range_lower": 1e308}, "rating_range_lower: 1e+308 is outside 0 to 5"),
             ({"facilities": ["wifi"] * 41}, "facilities: 41 phrases; at most 40"),
             ({"facilities": ["w" * 51]}, "facilities[0]: 51 characters")]
    db = HotelDB.open()
    for arguments, message in cases:
        started = time.perf_counter()
        with pytest.raises(SearchError, match=re.escape(message)):
            db.search(arguments)
        assert time.perf_counter() - started < 0.5  # milliseconds on an idle machine
    for arguments, message in cases[:2] + cases[3:]:  # a 401-digit integer is refused by the JSON reader first
        assert main(["db", "search", json.dumps(arguments, ensure_ascii=False)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tooltune: error: search_hotels: ") and message in err, err
    assert main(["db", "search", '{"price_range_upper": ' + "9" * 400 + "}"]) == 2
    assert "tooltune: error: arguments: price_range_upper: an integer of more than 100" in capsys.readouterr().err
    assert main(["db", "search", '{"name": "' + "[" * 3 + '"}', "--db", str(tmp_path)]) == 2
    assert f"tooltune: error: {tmp_path}: --db: not a database file" in capsys.readouterr().err
    assert main(["db", "search", "[" * 5000]) == 2
    assert "tooltune: error: arguments: nested more than 100 levels deep" in capsys.readouterr().err
    assert main(["db", "search", '{"name": "\\udc80"}']) == 2
    assert "tooltune: error: arguments: name: holds a lone surrogate" in capsys.readouterr().err


@pytest.mark.parametrize("role", [{"name": "user"}, ["user"]])
def test_a_role_that_is_an_object_or_a_list_is_named_not_a_traceback(tmp_path, capsys, role):
    """Found by `bench/fuzz.py --examples 3000`: an unhashable role reached a dict lookup (TypeError)."""
    path = tmp_path / "dialogues.jsonl"
    path.write_text(json.dumps([{"role": "user", "content": "有酒店吗"}, {"role": role, "content": "x"}],
                               ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["data", "convert", str(path), str(tmp_path / "out.jsonl"), "--to", "chatglm3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dialogues.jsonl:1" in err and "turns[1].role" in err, err
