"""The feedback store: conversations and feedback round-trip through SQLite; a continued history extends its
conversation; writes never hold up the caller; bad feedback and foreign files are refused, naming the field."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tooltune.dialogue import Assistant, Call, Result, User
from tooltune.errors import InputError
from tooltune.feedback import Correction, FeedbackStore, UnknownCompletion, read_conversations
from tooltune.feedback import store as store_module

ARGS = {"type": "经济型", "facilities": ["无烟房"], "rating_range_lower": 4.5}  # not in alphabetical order
HOTELS = [{"name": "如家酒店", "type": "经济型", "price": 288.0, "rating": 4.6}]


@pytest.fixture
def store(tmp_path):
    s = FeedbackStore(tmp_path / "feedback.sqlite")
    yield s
    s.close()


def first_answer(store, cid="c1", user="找一家4.5分以上有无烟房的经济型酒店", source="api"):
    history = [User(user)]
    turns = [Call(ARGS), Result(HOTELS), Assistant("推荐如家酒店。")]
    store.record(cid, history, turns, "runs/a", source)
    return history + turns


def test_conversation_and_feedback_round_trip(store):
    seen = first_answer(store, source="web")
    fb = store.rate("c1", 1, "bad", Correction(arguments={"type": "舒适型", "rating_range_lower": 4.5}))
    assert (fb.turn, fb.original, fb.rating) == (1, Call(ARGS), "bad")
    assert fb.correction == Call({"type": "舒适型", "rating_range_lower": 4.5})
    assert store.rate("c1", rating="good").turn == 3  # default: the completion's last turn, its reply
    store.rate("c1", 1, rating="good")  # a new rating replaces the old one; the correction given before stays
    later = seen + [User("谢谢")]
    store.record("c2", later, [Assistant("不客气。")], "runs/b", "web")
    store.flush()

    (conv,) = read_conversations(store.path)
    assert conv.source == "web" and [s.turn for s in conv.turns] == later + [Assistant("不客气。")]
    assert [s.completion for s in conv.turns] == [None, "c1", "c1", "c1", None, "c2"]
    assert [s.run for s in conv.turns] == [None, "runs/a", "runs/a", "runs/a", None, "runs/b"]
    assert [s.by_model for s in conv.turns] == [False, True, False, True, False, True]
    call, reply = conv.turns[1], conv.turns[3]
    assert call.rating == "good" and call.correction == Call({"type": "舒适型", "rating_range_lower": 4.5})
    assert reply.rating == "good" and reply.correction is None and conv.turns[5].rating is None
    assert list(call.turn.arguments) == list(ARGS)  # the order the model wrote the arguments in is kept
    assert conv.started <= conv.updated and conv.turns[1].created <= conv.turns[5].created


def test_a_client_copy_continues_and_a_regenerated_answer_forks(store):
    first_answer(store)
    # A client sends the turns back re-serialised (other key order): the same turns, the same conversation.
    copied = [User("找一家4.5分以上有无烟房的经济型酒店"), Call(dict(reversed(list(ARGS.items())))), Result(HOTELS),
              Assistant("推荐如家酒店。"), User("再便宜一点")]
    store.record("c2", copied, [Call({"type": "经济型", "price_range_upper": 200})], "runs/a", "api")
    # The same history as c2's sent again (a regenerated answer): a fork holding the history as sent.
    store.record("c3", copied, [Assistant("没有更便宜的了。")], "runs/a", "api")
    # A history that continues nothing stored: a new conversation.
    store.record("c4", [User("你好")], [Assistant("您好。")], "runs/a", "api")
    store.flush()
    convs = read_conversations(store.path)
    assert [len(c.turns) for c in convs] == [6, 6, 2]
    assert [s.completion for s in convs[0].turns] == [None, "c1", "c1", "c1", None, "c2"]
    assert [s.completion for s in convs[1].turns] == [None, None, None, None, None, "c3"]
    # feedback on the fork's answer lands in the fork
    assert store.rate("c3", rating="bad").conversation == convs[1].id != convs[0].id


def test_bad_feedback_is_refused_naming_the_field(store):
    first_answer(store)
    store.record("c2", [User("你好")], [Assistant("您好。")], "runs/a", "api")

    def refused(field, **kwargs):
        with pytest.raises(InputError) as info:
            store.rate(**{"completion_id": "c1", **kwargs})
        assert info.value.field == field, info.value
        return str(info.value)

    with pytest.raises(UnknownCompletion, match="no completion 'nope'"):
        store.rate("nope", rating="good")
    assert "not written by this completion" in refused("turn", turn=0, rating="good")  # the user's turn
    assert "not written by this completion" in refused("turn", turn=4, rating="good")
    assert "a result turn" in refused("turn", turn=2, rating="good")
    assert "'good' or 'bad'" in refused("rating", rating="meh")
    assert "a rating" in refused("rating")
    assert "type" in refused("correction.arguments", turn=1, correction=Correction(arguments={"type": "六星级"}))
    assert "unknown argument" in refused("correction.arguments", correction=Correction(arguments={"city": "北京"}))
    assert "0 to 5" in refused("correction.arguments", turn=1,
                               correction=Correction(arguments={"rating_range_lower": 7}))
    for kwargs, field in (({}, "correction"), ({"arguments": {}, "content": "x"}, "correction"),
                          ({"content": "  "}, "correction.content"), ({"arguments": []}, "correction.arguments"),
                          ({"content": "长" * 5000}, "correction.content")):
        with pytest.raises(InputError) as info:
            Correction(**kwargs)
        assert info.value.field == field
    with pytest.raises(InputError, match="did you mean 'arguments'"):
        Correction.from_json({"argument": {}})
    # a reply that should have been a search, and the other way round
    assert store.rate("c2", correction=Correction(arguments={"type": "经济型"})).correction == Call({"type": "经济型"})
    assert store.rate("c1", 1, correction=Correction(content="请问您对价格有要求吗？")).correction == \
        Assistant("请问您对价格有要求吗？")
    store.flush()
    assert store.failed == 0


def test_writes_never_hold_up_the_caller(store, monkeypatch):
    real = store_module._record
    release = threading.Event()

    def slow(con, c):  # a disk that takes its time
        release.wait(5)
        return real(con, c)

    monkeypatch.setattr(store_module, "_record", slow)
    started = time.monotonic()
    for k in range(5):
        store.record(f"c{k}", [User(f"请求{k}")], [Assistant("好的。")], "runs/a", "api")
    assert time.monotonic() - started < 0.5 and not release.is_set()
    release.set()
    # feedback waits for the writer, which has written every record queued before it
    assert store.rate("c4", rating="good").turn == 1
    assert len(read_conversations(store.path)) == 5


def test_a_failed_write_is_counted_and_the_store_keeps_going(store, caplog):
    first_answer(store)
    first_answer(store, user="另一个请求")  # the same completion id again: its write fails (primary key)
    store.record("c2", [User("你好")], [Assistant("您好。")], "runs/a", "api")
    store.flush()
    assert store.failed == 1 and "a record was not written" in caplog.text
    convs = read_conversations(store.path)
    assert [c.turns[0].turn for c in convs] == [User("找一家4.5分以上有无烟房的经济型酒店"), User("你好")]
    store.close()
    store.record("c3", [User("x")], [Assistant("y")], "runs/a", "api")
    assert store.failed == 2  # closed: counted, not raised


def test_records_racing_close_are_written_or_counted(tmp_path):
    """`close` while other threads record: every completion is either in the database or counted as failed (none
    lost behind the writer's stop mark), and rating after close is refused rather than left waiting."""
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    go = threading.Barrier(5)

    def client(k):
        go.wait()
        for n in range(40):
            store.record(f"c{k}-{n}", [User(f"请求{k}-{n}")], [Assistant("好的。")], "runs/a", "api")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    go.wait()
    time.sleep(0.005)
    store.close()
    for t in threads:
        t.join()
    written = len(read_conversations(store.path))
    assert written + store.failed == 160
    with pytest.raises(Exception, match="closed"):
        store.rate("c0-0", rating="good")
    store.close()  # a second close is a no-op


def test_only_the_documented_columns_exist(store):
    """Nothing else about the user can be stored: the tables hold exactly these columns."""
    con = sqlite3.connect(store.path)
    tables = {name: [row[1] for row in con.execute(f"PRAGMA table_info({name})")]
              for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert tables == {"meta": ["key", "value"],
                      "conversations": ["id", "source", "tools", "started", "updated", "length", "head"],
                      "completions": ["id", "conversation", "run", "created", "first_turn", "last_turn"],
                      "turns": ["conversation", "idx", "turn", "completion"],
                      "feedback": ["conversation", "idx", "rating", "correction", "updated"]}


def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "hotels.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE hotels (id INTEGER)")
    con.close()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    for path in (other, junk):
        with pytest.raises(InputError, match="not a tooltune feedback database"):
            FeedbackStore(path)
        with pytest.raises(InputError, match="not a tooltune feedback database"):
            read_conversations(path)
    con = sqlite3.connect(other)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["hotels"]  # nothing was added to it
    con.close()
    with pytest.raises(InputError) as info:
        FeedbackStore(tmp_path)
    assert info.value.field == "--feedback-db" and "directory" in str(info.value)
    with pytest.raises(InputError, match="no such feedback database"):
        read_conversations(tmp_path / "missing.sqlite")
    # reopening its own file is fine, and keeps what it holds
    first = FeedbackStore(tmp_path / "fb.sqlite")
    first.record("c1", [User("你好")], [Assistant("您好。")], "runs/a", "chat")
    first.close()
    again = FeedbackStore(tmp_path / "fb.sqlite")
    assert again.rate("c1", rating="good").rating == "good"
    again.close()
    assert read_conversations(tmp_path / "fb.sqlite")[0].source == "chat"
