"""`tooltune chat`: driven through scripted stdin, with every chat format and with a real saved tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import tooltune.bot
from bot_support import FORMAT_NAMES, ScriptedPolicy, save_tiny_run, scripted_generator
from tooltune import cli
from tooltune.bot import Session
from tooltune.bot.terminal import chat_loop, hotel_table, width
from tooltune.db import HotelDB
from tooltune.dialogue import Assistant, Call, User
from tooltune.feedback import read_conversations


@pytest.fixture(scope="module")
def db_path(data_root: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "hotels.sqlite"
    HotelDB.open(path, data_root)
    return path


def test_chat_loop_shows_call_table_reply_and_resets(db_path):
    db = HotelDB.open(db_path)
    args = {"type": "经济型", "facilities": ["能打国际长途", "会变魔术"]}
    policy = ScriptedPolicy([Call(args), Assistant("推荐这家。"), Call({"type": "五星级"}), Assistant("类型不对。")])
    out = io.StringIO()
    answered = chat_loop(Session(policy, db), io.StringIO("找经济型酒店\n/reset\n\n/help\n找五星级\n/exit\n找不到\n"),
                         out)
    text = out.getvalue()
    records = db.search(args).records
    assert answered == 2
    assert '[call] search_hotels {"type": "经济型", "facilities": ["能打国际长途", "会变魔术"]}' in text
    assert "[note] facility '会变魔术' matches no database facility" in text
    assert hotel_table(records) in text and records[0]["name"] in text
    assert "bot> 推荐这家。" in text and "[conversation reset]" in text and "[unknown command /help]" in text
    assert "[search failed] type:" in text and "bot> 类型不对。" in text
    assert policy.histories[2] == (User("找五星级"),)  # /reset emptied the history; nothing after /exit was read
    assert len(policy.histories) == 4


def test_hotel_table_aligns_wide_characters():
    table = hotel_table([{"name": "如家酒店", "type": "经济型", "price": 288.0, "rating": 4.5, "subway": None},
                         {"name": "HotelB", "type": "豪华型", "price": 1200.5, "rating": 5.0, "subway": "国贸站"}])
    lines = table.splitlines()
    assert lines[0].split() == ["hotel", "type", "price", "rating", "subway"]
    assert lines[2].split() == ["如家酒店", "经济型", "288", "4.5", "-"]
    # every column starts at the same display column on every line
    assert [starts(line) for line in lines[2:]] == [[0, 10, 18, 26, 34]] * 2 and width("如家酒店") == 8


def starts(line: str) -> list[int]:
    """The display column where each cell of a table line starts."""
    out, at = [], 0
    for cell in line.split():
        at = line.index(cell, at)
        out.append(width(line[:at]))
        at += len(cell)
    return out


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_chat_command_with_every_format(name, db_path, tmp_path, monkeypatch, capsys):
    call = Call({"type": "豪华型", "rating_range_lower": 4.8})
    policy, _, _ = scripted_generator(name, [call, Assistant("推荐这家。"), Assistant("不客气。")])
    seen = {}

    def fake_load(run, fmt=None, device=None, max_new_tokens=256, constrained=False, **options):
        seen.update(run=run, fmt=fmt)
        return policy

    monkeypatch.setattr(tooltune.bot, "load_policy", fake_load)
    monkeypatch.setattr("sys.stdin", io.StringIO("找评分4.8以上的豪华型酒店\n谢谢\n"))
    rc = cli.main(["chat", "some-run", "--format", name, "--db", str(db_path), "--limit", "2",
                   "--feedback-db", str(tmp_path / "feedback.sqlite")])
    out = capsys.readouterr().out
    assert rc == 0 and seen == {"run": "some-run", "fmt": name}
    hotel = HotelDB.open(db_path).search(call.arguments, limit=2).records[0]["name"]
    assert "[call] search_hotels" in out and hotel in out and "bot> 推荐这家。" in out and "bot> 不客气。" in out
    (conv,) = read_conversations(tmp_path / "feedback.sqlite")  # what the format parsed is what is stored
    assert [s.turn for s in conv.turns][:2] == [User("找评分4.8以上的豪华型酒店"), call] and len(conv.turns) == 6


def test_chat_command_loads_a_saved_tiny_model(tmp_path, db_path, monkeypatch, capsys):
    run = save_tiny_run(tmp_path / "run", "chatglm2")
    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n/exit\n"))
    rc = cli.main(["chat", str(run), "--db", str(db_path), "--max-new-tokens", "4", "--device", "cpu", "--no-feedback"])
    out = capsys.readouterr().out
    assert rc == 0 and "bot>" in out


def test_chat_command_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["chat", str(tmp_path)]) == 2
    assert "no chat format: give --format" in capsys.readouterr().err
    assert cli.main(["chat", str(tmp_path / "missing"), "--format", "llama2"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["chat", str(tmp_path), "--format", "nope"]) == 2
    assert "unknown format 'nope'" in capsys.readouterr().err


def test_a_format_whose_special_tokens_the_tokenizer_lacks_is_refused_at_load(tmp_path, capsys):
    run = save_tiny_run(tmp_path / "run", "llama2")  # a byte-level BPE without ChatGLM3's role tokens
    assert cli.main(["chat", str(run), "--format", "chatglm3"]) == 2
    assert "lacks the chatglm3 format's special tokens <|system|>" in capsys.readouterr().err


def test_a_failed_turn_is_reported_and_undone(db_path):
    from tooltune.formats import SampleTooLong

    class TooLongOnce(ScriptedPolicy):
        def next_turn(self, history, options=None):
            if not self.histories:
                self.histories.append(tuple(history))
                raise SampleTooLong("3000 tokens, and no cut keeps a whole trained turn within max_length=2048")
            return super().next_turn(history, options)

    policy = TooLongOnce([Assistant("unused"), Assistant("你好。")])
    session = Session(policy, HotelDB.open(db_path))
    out = io.StringIO()
    assert chat_loop(session, io.StringIO("很长的请求\n你好\n"), out) == 1
    assert "[error] 3000 tokens" in out.getvalue() and "bot> 你好。" in out.getvalue()
    assert session.history == [User("你好"), Assistant("你好。")]  # the failed turn left nothing behind
