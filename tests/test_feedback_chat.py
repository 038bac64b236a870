"""Feedback in `tooltune chat`: /good, /bad and /fix through scripted stdin, what the store then holds, and the
command's --feedback-db / --no-feedback options."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import tooltune.bot
from bot_support import ScriptedPolicy
from tooltune import cli
from tooltune.bot import Session
from tooltune.bot.terminal import chat_loop
from tooltune.db import HotelDB
from tooltune.dialogue import Assistant, Call, Result, User
from tooltune.feedback import FeedbackStore, read_conversations

ARGS = {"type": "经济型"}


@pytest.fixture(scope="module")
def db_path(data_root: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feedback-chat") / "hotels.sqlite"
    HotelDB.open(path, data_root)
    return path


def test_good_bad_and_fix_on_the_last_answer(db_path, tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    policy = ScriptedPolicy([Call(ARGS), Assistant("推荐这家。"), Assistant("不客气。")])
    lines = ["/good", "找经济型酒店", "/bad call", '/fix {"type": "舒适型", "rating_range_lower": 4}',
             '/fix {"type": "六星级"}', "/fix {bad json", "/good reply", "/good everything", "谢谢",
             "/good call", "/fix 不用谢，祝您入住愉快。", "/reset", "/bad"]
    out = io.StringIO()
    answered = chat_loop(Session(policy, HotelDB.open(db_path)), io.StringIO("\n".join(lines) + "\n"), out,
                         feedback=store, run="runs/x")
    store.close()
    text = out.getvalue()
    assert answered == 2 and "/fix TEXT (the reply as it should have been)" in text  # the help names the commands
    assert text.count("[nothing to rate yet: feedback is on the last answer]") == 2  # before any answer, after /reset
    assert '[feedback] bad: call search_hotels {"type": "经济型"}\n' in text
    assert '[fixed] call search_hotels {"type": "经济型"} -> call search_hotels {"type": "舒适型", ' \
           '"rating_range_lower": 4}' in text
    assert "[feedback not kept] correction.arguments: type: '六星级' is not one of" in text
    assert "[feedback not kept] /fix: not valid JSON" in text
    assert "[feedback] good: reply 推荐这家。" in text and "[usage] /good, /good call or /good reply" in text
    assert "[the last answer has no call]" in text
    assert "[fixed] reply 不客气。 -> reply 不用谢，祝您入住愉快。" in text

    (conv,) = read_conversations(store.path)
    records = HotelDB.open(db_path).search(ARGS).records
    assert [s.turn for s in conv.turns] == [User("找经济型酒店"), Call(ARGS), Result(records), Assistant("推荐这家。"),
                                            User("谢谢"), Assistant("不客气。")]
    assert conv.source == "chat" and {s.run for s in conv.turns if s.completion} == {"runs/x"}
    call, reply, thanks = conv.turns[1], conv.turns[3], conv.turns[5]
    assert (call.rating, call.correction) == ("bad", Call({"type": "舒适型", "rating_range_lower": 4}))
    assert (reply.rating, reply.correction) == ("good", None)
    assert (thanks.rating, thanks.correction) == (None, Assistant("不用谢，祝您入住愉快。"))


def test_without_a_store_feedback_commands_say_it_is_off(db_path):
    out = io.StringIO()
    chat_loop(Session(ScriptedPolicy([Assistant("您好。")]), HotelDB.open(db_path)), io.StringIO("你好\n/good\n"), out)
    assert "[feedback is off (--no-feedback)]" in out.getvalue() and "/fix" not in out.getvalue().splitlines()[0]


def test_the_chat_command_stores_where_it_says(db_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tooltune.bot, "load_policy", lambda run, **kwargs: ScriptedPolicy([Assistant("您好。")]))
    path = tmp_path / "fb" / "feedback.sqlite"
    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n/good\n"))
    assert cli.main(["chat", "some-run", "--format", "llama2", "--db", str(db_path), "--feedback-db", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"feedback: conversations and feedback are stored in {path}" in out
    assert "[feedback] good: reply 您好。" in out
    (conv,) = read_conversations(path)
    assert conv.turns[1].rating == "good" and conv.turns[1].run == str(Path("some-run").resolve())

    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n/good\n"))
    monkeypatch.setattr(tooltune.bot, "load_policy", lambda run, **kwargs: ScriptedPolicy([Assistant("您好。")]))
    assert cli.main(["chat", "some-run", "--format", "llama2", "--db", str(db_path), "--no-feedback"]) == 0
    out = capsys.readouterr().out
    assert "feedback: off (--no-feedback)" in out and "[feedback is off (--no-feedback)]" in out
    assert len(read_conversations(path)) == 1


def test_bad_feedback_options_are_one_line_errors(db_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tooltune.bot, "load_policy", lambda run, **kwargs: ScriptedPolicy([]))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    base = ["chat", "some-run", "--format", "llama2", "--db", str(db_path)]
    assert cli.main(base + ["--feedback-db", str(db_path)]) == 2  # the hotel database is no feedback database
    err = capsys.readouterr().err
    assert err.startswith(f"tooltune: error: {db_path}: not a tooltune feedback database") and err.count("\n") == 1
    assert cli.main(base + ["--feedback-db", str(tmp_path / "x.sqlite"), "--no-feedback"]) == 2
    assert "--no-feedback: --feedback-db and --no-feedback contradict each other" in capsys.readouterr().err
    assert cli.main(base + ["--feedback-db", str(tmp_path)]) == 2
    assert f"{tmp_path}: --feedback-db: not a file (a directory?)" in capsys.readouterr().err
