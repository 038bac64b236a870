"""Writing conversations and feedback to the database (`tooltune.feedback.database`): `tooltune serve` and `tooltune
chat` record every completion and take ratings and corrections through a `FeedbackStore`.

What is stored (and that nothing else about the user is): see `tooltune.feedback.database`.

A stateless API needs no conversation id: a client sends the whole history each time. A completion whose history
continues a stored conversation (the stored turns are exactly its first turns) extends that conversation; any other
history starts a new one. Conversations are found by a chained hash of their turns (`head`), so a client that
regenerates an answer (sends the same history twice) forks a new conversation from the common turns, which is what
happened. A turn's index is its position in the conversation: the index of its message in the OpenAI `messages`
list (the web page's `messages` too).

Writes go through one writer thread and a queue, each job one transaction (`BEGIN IMMEDIATE ... COMMIT`): `record`
returns at once (a response never waits on the disk, and nothing is written under the model's lock); `rate` waits for
its answer (the client must learn whether the completion exists) and runs after every `record` queued before it, so
feedback on a completion just answered finds it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

from tooltune import jsonio
from tooltune.db import SearchError, check_arguments
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Tool, Turn, turn_from_seed
from tooltune.errors import InputError, ToolTuneError
from tooltune.feedback.database import SOURCES, chain, connect, prepare, tools_text, turn_key, turn_text
from tooltune.schema import argument_problems

log = logging.getLogger("tooltune.feedback")

RATINGS = ("good", "bad")
MAX_CONTENT = 4000
"""Most characters in a corrected reply (the course's replies have at most a few hundred)."""


class UnknownCompletion(InputError):
    def __init__(self, completion_id: str):
        super().__init__(f"no completion {completion_id!r} in the feedback store", field="completion_id")


@dataclass(frozen=True)
class Correction:
    """The turn as it should have been: a call's arguments, or a reply's text. Either may replace either kind of
    model turn: a reply that should have been a search is corrected with arguments, and the other way round."""

    arguments: dict[str, Any] | None = None
    content: str | None = None

    def __post_init__(self) -> None:
        if (self.arguments is None) == (self.content is None):
            raise InputError("a correction holds either 'arguments' (the call as it should have been) or 'content' "
                             "(the reply as it should have been)", field="correction")
        if self.arguments is not None and not isinstance(self.arguments, dict):
            raise InputError(f"must be an object, got {type(self.arguments).__name__}", field="correction.arguments")
        if self.content is not None:
            if not isinstance(self.content, str) or not self.content.strip():
                raise InputError("must be a non-empty string", field="correction.content")
            if len(self.content) > MAX_CONTENT:
                raise InputError(f"{len(self.content)} characters; a corrected reply has at most {MAX_CONTENT}",
                                 field="correction.content")

    @classmethod
    def from_json(cls, value: Any) -> "Correction":
        if not isinstance(value, dict):
            raise InputError('must be an object: {"arguments": {...}} for a call, {"content": "..."} for a reply',
                             field="correction")
        jsonio.check_keys(value, ("arguments", "content"), None, "correction")
        return cls(value.get("arguments"), value.get("content"))

    def apply(self, turn: Call | Assistant, tools: Sequence[Tool]) -> Call | Assistant:
        """The corrected turn; a call's arguments are checked against its tool (`InputError` naming the key)."""
        if self.content is not None:
            return Assistant(self.content)
        name = turn.name if isinstance(turn, Call) else (tools[0].name if tools else HOTEL_TOOL.name)
        _check_arguments(name, self.arguments, tools)
        return Call(dict(self.arguments), name=name)


def _check_arguments(name: str, arguments: dict[str, Any], tools: Sequence[Tool]) -> None:
    if name == HOTEL_TOOL.name:  # the schema and the database's bounds: a correction must be a search that runs
        try:
            check_arguments(arguments)
        except SearchError as e:
            raise InputError(e.message, field="correction.arguments") from None
        return
    tool = next((t for t in tools if t.name == name), None)
    problems = argument_problems(tool, arguments) if tool is not None else []
    if problems:
        raise InputError("; ".join(problems), field="correction.arguments")


@dataclass(frozen=True)
class Feedback:
    """The feedback a turn holds after a `rate` (ratings and corrections given earlier are kept unless replaced)."""

    completion_id: str
    conversation: str
    turn: int
    original: Call | Assistant
    rating: str | None
    correction: Call | Assistant | None


def _transaction(con: sqlite3.Connection, write: Callable[[sqlite3.Connection], Any]) -> Any:
    con.execute("BEGIN IMMEDIATE")
    try:
        result = write(con)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return result


# ---- writing -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Completion:
    id: str
    texts: tuple[str, ...]
    """Every turn the model saw, then every turn it added, as stored (`turn_text`)."""
    keys: tuple[str, ...]
    """The same turns as the chained hash reads them (`turn_key`)."""
    first: int
    """Index of the first added turn (= the number of turns the model was given)."""
    run: str
    source: str
    tools: str
    created: float


def _record(con: sqlite3.Connection, c: _Completion) -> None:
    heads = chain(c.keys)
    conversation, stored = None, 0
    for k in range(c.first, 0, -1):  # the longest stored conversation the history continues
        row = con.execute("SELECT id FROM conversations WHERE head = ? AND length = ? ORDER BY updated DESC LIMIT 1",
                          (heads[k], k)).fetchone()
        if row is not None:
            conversation, stored = row[0], k
            break
    if conversation is None:
        conversation = uuid.uuid4().hex
        con.execute("INSERT INTO conversations (id, source, tools, started, updated, length, head) "
                    "VALUES (?, ?, ?, ?, ?, 0, '')", (conversation, c.source, c.tools, c.created, c.created))
    end = len(c.texts)
    con.execute("INSERT INTO completions (id, conversation, run, created, first_turn, last_turn) "
                "VALUES (?, ?, ?, ?, ?, ?)", (c.id, conversation, c.run, c.created, c.first, end - 1))
    con.executemany("INSERT INTO turns (conversation, idx, turn, completion) VALUES (?, ?, ?, ?)",
                    [(conversation, i, c.texts[i], c.id if i >= c.first else None) for i in range(stored, end)])
    con.execute("UPDATE conversations SET length = ?, head = ?, updated = ? WHERE id = ?",
                (end, heads[end], c.created, conversation))


def _rate(con: sqlite3.Connection, completion_id: str, turn: int | None, rating: str | None,
          correction: Correction | None, now: float) -> Feedback:
    row = con.execute("SELECT conversation, first_turn, last_turn FROM completions WHERE id = ?",
                      (completion_id,)).fetchone()
    if row is None:
        raise UnknownCompletion(completion_id)
    conversation, first, last = row
    index = last if turn is None else turn
    if not first <= index <= last:
        raise InputError(f"turn {index} was not written by this completion (it added turns {first} to {last})",
                         field="turn")
    text, tools = con.execute("SELECT t.turn, c.tools FROM turns t JOIN conversations c ON c.id = t.conversation "
                              "WHERE t.conversation = ? AND t.idx = ?", (conversation, index)).fetchone()
    original = turn_from_seed(json.loads(text))
    if not isinstance(original, (Call, Assistant)):
        raise InputError(f"turn {index} is a {original.role} turn; feedback is on the model's calls and replies",
                         field="turn")
    fixed = correction.apply(original, [Tool.from_dict(t) for t in json.loads(tools)]) if correction else None
    con.execute("INSERT INTO feedback (conversation, idx, rating, correction, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (conversation, idx) DO UPDATE SET rating = COALESCE(excluded.rating, rating), "
                "correction = COALESCE(excluded.correction, correction), updated = excluded.updated",
                (conversation, index, rating, turn_text(fixed) if fixed else None, now))
    rating, fixed_text = con.execute("SELECT rating, correction FROM feedback WHERE conversation = ? AND idx = ?",
                                     (conversation, index)).fetchone()
    return Feedback(completion_id, conversation, index, original, rating,
                    turn_from_seed(json.loads(fixed_text)) if fixed_text else None)


class FeedbackStore:
    """The writer of one database file: a thread that owns the connection, fed by a queue (see the module doc)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path = prepare(path)
        self.timeout = timeout
        """Seconds `rate` waits for the writer."""
        self.failed = 0
        """Records that could not be written (logged; never raised into a response)."""
        self._jobs: queue.Queue = queue.Queue()
        self._closed = False
        self._gate = threading.Lock()
        """Held to check `_closed` and queue a job in one step, so that no job lands behind `close`'s stop mark."""
        self._thread = threading.Thread(target=self._work, name="tooltune-feedback-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            con, broken = connect(self.path), None
        except sqlite3.Error as e:
            con, broken = None, e
        try:
            while True:
                job = self._jobs.get()
                try:
                    if job is None:
                        return
                    write, done = job
                    try:
                        if con is None:
                            raise ToolTuneError(f"cannot open the feedback database {self.path}: {broken}")
                        result = _transaction(con, write)
                    except Exception as e:
                        if done is None:
                            self.failed += 1
                            log.error("feedback store %s: a record was not written: %s: %s", self.path,
                                      type(e).__name__, e)
                        else:
                            done.set_exception(e)
                    else:
                        if done is not None:
                            done.set_result(result)
                finally:
                    self._jobs.task_done()
        finally:
            if con is not None:
                con.close()

    def record(self, completion_id: str, history: Sequence[Turn], turns: Sequence[Turn], run: str, source: str,
               tools: Sequence[Tool] = (HOTEL_TOOL,)) -> None:
        """Queue a completion: the turns the model was given (`history`) and the turns it added (`turns`: its calls,
        the results the server ran, its reply). Returns at once; a failure is logged and counted, never raised."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if not turns:
            return
        try:  # serialised here: a snapshot of the turns as they are now, and no Python objects cross threads
            every = (*history, *turns)
            entry = _Completion(completion_id, tuple(map(turn_text, every)), tuple(map(turn_key, every)),
                                len(history), run, source, tools_text(tools), time.time())
        except (TypeError, ValueError) as e:
            self.failed += 1
            log.error("feedback store %s: completion %s not recorded: %s", self.path, completion_id, e)
            return
        if not self._queue(partial(_record, c=entry), None):
            self.failed += 1
            log.error("feedback store %s is closed: completion %s not recorded", self.path, completion_id)

    def rate(self, completion_id: str, turn: int | None = None, rating: str | None = None,
             correction: Correction | None = None) -> Feedback:
        """Store feedback on turn `turn` (default: the completion's last turn) and return what the turn now holds.
        A rating or correction given earlier stays unless this one replaces it. Raises `UnknownCompletion`, or
        `InputError` naming the field (`turn`, `rating`, `correction...`)."""
        if rating is None and correction is None:
            raise InputError("give a rating ('good' or 'bad') or a correction", field="rating")
        if rating is not None and rating not in RATINGS:
            raise InputError(f"must be 'good' or 'bad', not {rating!r}", field="rating")
        done: Future = Future()
        if not self._queue(partial(_rate, completion_id=completion_id, turn=turn, rating=rating,
                                   correction=correction, now=time.time()), done):
            raise ToolTuneError(f"the feedback store {self.path} is closed")
        return done.result(timeout=self.timeout)

    def _queue(self, write: Callable[[sqlite3.Connection], Any], done: Future | None) -> bool:
        """Queue a job unless the store is closed (False then)."""
        with self._gate:
            if self._closed:
                return False
            self._jobs.put((write, done))
            return True

    def flush(self) -> None:
        """Wait until every job queued so far is written."""
        self._jobs.join()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        self._thread.join(self.timeout)
