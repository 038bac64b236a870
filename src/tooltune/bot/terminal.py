"""The terminal chat: read a line, answer it, show the searches (hotels as a table) and the reply; `/reset`, `/exit`."""

from __future__ import annotations

import json
import unicodedata
from typing import Any, TextIO

from tooltune.bot.session import Exchange, Search, Session
from tooltune.errors import ToolTuneError

COLUMNS = (("name", "hotel"), ("type", "type"), ("price", "price"), ("rating", "rating"), ("subway", "subway"))
HELP = "Type a request. /reset starts a new conversation, /exit (or end of input) quits."


def width(text: str) -> int:
    """Columns a string takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, cols: int) -> str:
    return text + " " * (cols - width(text))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def hotel_table(records: list[dict[str, Any]]) -> str:
    rows = [[h for _, h in COLUMNS]] + [[_cell(r.get(k)) for k, _ in COLUMNS] for r in records]
    cols = [max(width(row[c]) for row in rows) for c in range(len(COLUMNS))]
    lines = ["  ".join(pad(cell, w) for cell, w in zip(row, cols)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in cols))
    return "\n".join(lines)


def show_search(search: Search) -> str:
    head = f"[call] {search.call.name} {json.dumps(search.call.arguments, ensure_ascii=False)}"
    if not search.executed:
        return head + "\n[not run: the bot reached its limit of searches for this turn]"
    if search.error is not None:
        return head + f"\n[search failed] {search.error}"
    notes = [f"[note] facility {p!r} matches no database facility; not used as a filter" for p in search.unmatched]
    found = hotel_table(search.records) if search.records else "[no hotel found]"
    return "\n".join([head, *notes, found])


def show_exchange(exchange: Exchange) -> str:
    parts = [show_search(s) for s in exchange.searches]
    if exchange.malformed:
        parts.append(f"[note] {exchange.malformed} model turn(s) could not be read cleanly")
    parts.append(f"bot> {exchange.reply}" if exchange.reply is not None else "bot> (no reply: too many searches)")
    return "\n".join(parts)


def chat_loop(session: Session, stdin: TextIO, stdout: TextIO, prompt: str = "you> ") -> int:
    """Run until /exit or end of input; returns the number of user turns answered."""
    print(HELP, file=stdout)
    answered = 0
    while True:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return answered
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return answered
        if text == "/reset":
            session.reset()
            print("[conversation reset]", file=stdout)
            continue
        if text.startswith("/"):
            print(f"[unknown command {text.split()[0]}] {HELP}", file=stdout)
            continue
        try:
            exchange = session.send(text)
        except ToolTuneError as e:  # e.g. a conversation too long for the prompt: the turn is undone
            print(f"[error] {e} (the turn was not kept; /reset starts over)", file=stdout)
            continue
        print(show_exchange(exchange), file=stdout)
        answered += 1
