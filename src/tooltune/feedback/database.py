"""The feedback database file: its schema, creating and checking it, and reading it back (`read_conversations`).

What is stored, and nothing else about the user: each conversation as the model saw it (its turns in the seed form:
user turns, calls, the hotels returned, replies; the tools it was shown), which completion wrote each model turn, with
the run that answered and the time, and the feedback on model turns: a rating (good or bad) and/or a correction (the
turn as it should have been). No address, header, API key, user name or client id. `tooltune.feedback.store` writes
it; the database is in WAL mode, so an export reads while a server writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tooltune import jsonio, paths
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Tool, Turn, turn_from_seed, turn_to_seed
from tooltune.errors import InputError

KIND = "tooltune feedback"
SCHEMA_VERSION = "1"
SOURCES = ("api", "web", "chat")
"""Where a conversation came from: `/v1/chat/completions`, the web page, `tooltune chat`."""

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    tools TEXT NOT NULL,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    length INTEGER NOT NULL,
    head TEXT NOT NULL
);
CREATE INDEX conversations_by_head ON conversations (head);
CREATE TABLE completions (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations (id),
    run TEXT NOT NULL,
    created REAL NOT NULL,
    first_turn INTEGER NOT NULL,
    last_turn INTEGER NOT NULL
);
CREATE TABLE turns (
    conversation TEXT NOT NULL REFERENCES conversations (id),
    idx INTEGER NOT NULL,
    turn TEXT NOT NULL,
    completion TEXT REFERENCES completions (id),
    PRIMARY KEY (conversation, idx)
);
CREATE TABLE feedback (
    conversation TEXT NOT NULL,
    idx INTEGER NOT NULL,
    rating TEXT CHECK (rating IN ('good', 'bad')),
    correction TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (conversation, idx),
    FOREIGN KEY (conversation, idx) REFERENCES turns (conversation, idx)
);
"""
# conversations: `source` one of SOURCES; `tools` the JSON list of tools shown to the model; `started`/`updated` unix
# times of its first and last completion; `length` its turns; `head` the chained hash of its turns (`chain`).
# completions: `id` the id the client received (chatcmpl-...); `run` the run that answered; `first_turn`..`last_turn`
# the indexes of the turns it added (the model's calls and reply, and the results the server ran).
# turns: `turn` the seed JSON of the turn; `completion` NULL for a turn the client sent.
# feedback: `correction` the seed JSON of the turn as it should have been.


def default_path() -> Path:
    """Beside the hotel database in the user cache: `cache_dir()/feedback.sqlite`."""
    return paths.cache_dir() / "feedback.sqlite"


@dataclass(frozen=True)
class StoredTurn:
    turn: Turn
    completion: str | None
    """The completion that added it, or None: the client sent it (a user turn, its tool's result, earlier turns)."""
    run: str | None
    created: float | None
    rating: str | None = None
    correction: Call | Assistant | None = None

    @property
    def by_model(self) -> bool:
        """A call or reply the model wrote here (a result the server ran has a completion too, but is no model turn)."""
        return self.completion is not None and isinstance(self.turn, (Call, Assistant))


@dataclass(frozen=True)
class StoredConversation:
    id: str
    source: str
    started: float
    updated: float
    tools: tuple[Tool, ...]
    turns: tuple[StoredTurn, ...] = field(default_factory=tuple)


# ---- turns as stored -----------------------------------------------------------------------------------------------

def turn_text(turn: Turn) -> str:
    """A turn's seed JSON as stored (arguments in the order written: the order is part of what the model wrote)."""
    seed = turn_to_seed(turn)
    if isinstance(turn, (Call,)) and turn.name != HOTEL_TOOL.name:
        seed["name"] = turn.name
    return json.dumps(seed, ensure_ascii=False)


def turn_key(turn: Turn) -> str:
    """What the chained hash reads: the seed JSON with sorted keys, so that a client's copy of a turn (arguments or
    records re-serialised in another key order) continues the conversation."""
    seed = turn_to_seed(turn)
    if isinstance(turn, Call):
        seed["name"] = turn.name
    return json.dumps(seed, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def chain(keys: Sequence[str]) -> list[str]:
    """heads[k]: the hash of the first k turns (heads[0] = ""); each step hashes the previous head and one turn."""
    heads = [""]
    for key in keys:
        heads.append(hashlib.sha256(f"{heads[-1]}\n{key}".encode("utf-8", "surrogatepass")).hexdigest())
    return heads


def tools_text(tools: Sequence[Tool]) -> str:
    return json.dumps([t.to_dict() for t in tools], ensure_ascii=False)


# ---- the database file ---------------------------------------------------------------------------------------------

def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=10, isolation_level=None)  # transactions are explicit (BEGIN IMMEDIATE)
    con.execute("PRAGMA foreign_keys = ON")
    return con


def _meta(con: sqlite3.Connection) -> dict[str, str] | None:
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:  # no meta table, or not an SQLite file at all
        return None


def _check_ours(con: sqlite3.Connection, path: Path) -> None:
    meta = _meta(con)
    if meta is None or meta.get("kind") != KIND:
        raise InputError("not a tooltune feedback database (give the path `tooltune serve` or `tooltune chat` "
                         "printed at start-up)", where=str(path))
    if meta.get("schema") != SCHEMA_VERSION:
        raise InputError(f"feedback database of schema {meta.get('schema')!r}; this tooltune reads schema "
                         f"{SCHEMA_VERSION!r}", where=str(path))


def prepare(path: str | os.PathLike) -> Path:
    """Create the database at `path`, or check that the file there is one (never add tables to another file, e.g.
    a mistyped `--feedback-db` naming the hotel database). Runs in the caller's thread: a bad path fails at start-up."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError("not a file (a directory?)", where=str(path), field="--feedback-db")
    fresh = not path.exists() or path.stat().st_size == 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(path)
    except (OSError, sqlite3.Error) as e:
        foreign = not fresh and isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError)
        what = "not a tooltune feedback database" if foreign else "cannot open the feedback database"
        raise InputError(f"{what}: {e}", where=str(path), field="--feedback-db") from None
    try:
        if fresh:
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript("BEGIN;" + _DDL + "COMMIT;")
            con.executemany("INSERT INTO meta VALUES (?, ?)", [("kind", KIND), ("schema", SCHEMA_VERSION)])
        _check_ours(con, path)
    except sqlite3.Error as e:
        raise InputError(f"cannot write the feedback database: {e}", where=str(path), field="--feedback-db") from None
    finally:
        con.close()
    return path


# ---- reading -------------------------------------------------------------------------------------------------------

def read_conversations(path: str | os.PathLike) -> list[StoredConversation]:
    """Every stored conversation, oldest first, with its turns, their completions' runs and their feedback."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such feedback database (`tooltune serve` and `tooltune chat` create it and print its "
                         "path)", where=str(path))
    try:
        con = sqlite3.connect(str(path), timeout=10)
    except sqlite3.Error as e:
        raise InputError(f"cannot open the feedback database: {e}", where=str(path)) from None
    try:
        _check_ours(con, path)
        heads = con.execute("SELECT id, source, started, updated, tools FROM conversations "
                            "ORDER BY started, id").fetchall()
        rows = con.execute("SELECT t.conversation, t.idx, t.turn, t.completion, c.run, c.created, f.rating, "
                           "f.correction FROM turns t LEFT JOIN completions c ON c.id = t.completion "
                           "LEFT JOIN feedback f ON f.conversation = t.conversation AND f.idx = t.idx "
                           "ORDER BY t.conversation, t.idx").fetchall()
    except sqlite3.Error as e:
        raise InputError(f"cannot read the feedback database: {e}", where=str(path)) from None
    finally:
        con.close()
    turns: dict[str, list[StoredTurn]] = {}
    for conv, idx, text, completion, run, created, rating, correction in rows:
        where = f"{path}: conversation {conv}"
        fld = f"turns[{idx}]"
        turn = turn_from_seed(jsonio.loads(text, where, fld), where, idx)
        fixed = turn_from_seed(jsonio.loads(correction, where, f"{fld}.correction"), where, idx) if correction else None
        turns.setdefault(conv, []).append(StoredTurn(turn, completion, run, created, rating, fixed))
    out = []
    for conv, source, started, updated, tools in heads:
        specs = jsonio.loads(tools, f"{path}: conversation {conv}", "tools")
        out.append(StoredConversation(conv, source, started, updated,
                                      tuple(Tool.from_dict(t, where=f"{path}: conversation {conv}") for t in specs),
                                      tuple(turns.get(conv, ()))))
    return out
