"""The terminal chat: read a line, answer it, show the searches (hotels as a table) and the reply; `/reset`, `/exit`.

With a feedback store, every answer is recorded, and `/good`, `/bad` and `/fix` give feedback on the last one:
`/good` and `/bad` rate each of its calls and its reply (`/bad call`, `/good reply`: only those); `/fix {...}` gives its
call's arguments as they should have been (the whole object, not a patch), `/fix TEXT` its reply as it should have been.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any, TextIO

from tooltune import jsonio
from tooltune.bot.api import new_completion_id
from tooltune.bot.session import Exchange, Search, Session
from tooltune.dialogue import Assistant, Call, Turn
from tooltune.errors import ToolTuneError
from tooltune.feedback import Correction

COLUMNS = (("name", "hotel"), ("type", "type"), ("price", "price"), ("rating", "rating"), ("subway", "subway"))
HELP = "Type a request. /reset starts a new conversation, /exit (or end of input) quits."
FEEDBACK_HELP = ('On the last answer: /good, /bad (or /good call, /bad reply), /fix {"type": "经济型"} (the call\'s '
                 'arguments as they should have been), /fix TEXT (the reply as it should have been).')


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


@dataclass(frozen=True)
class Answer:
    """The last answer, as feedback names it: its completion id and its turns' indexes in the conversation."""

    completion_id: str
    first: int
    """Index of its first turn (a call, or the reply) in the conversation."""
    turns: tuple[Turn, ...]

    def model_turns(self, kind: type | tuple[type, ...] = (Call, Assistant)) -> list[tuple[int, Turn]]:
        return [(self.first + i, t) for i, t in enumerate(self.turns) if isinstance(t, kind)]


def describe(turn: Turn) -> str:
    if isinstance(turn, Call):
        return f"call {turn.name} {json.dumps(turn.arguments, ensure_ascii=False)}"
    return f"reply {turn.content}" if isinstance(turn, Assistant) else turn.role


def give_feedback(text: str, last: Answer | None, store: Any) -> str:
    """Run one /good, /bad or /fix line on the last answer; the line to show (what was stored, or why not)."""
    if store is None:
        return "[feedback is off (--no-feedback)]"
    if last is None:
        return "[nothing to rate yet: feedback is on the last answer]"
    word, _, rest = text.partition(" ")
    rest = rest.strip()
    try:
        if word in ("/good", "/bad"):
            kinds = {"": (Call, Assistant), "call": Call, "reply": Assistant}
            if rest not in kinds:
                return f"[usage] {word}, {word} call or {word} reply"
            targets = last.model_turns(kinds[rest])
            if not targets:
                return f"[the last answer has no {rest}]"
            for index, _ in targets:
                store.rate(last.completion_id, index, rating=word[1:])
            return f"[feedback] {word[1:]}: " + "; ".join(describe(t) for _, t in targets)
        if not rest:
            return f"[usage] {FEEDBACK_HELP}"
        if rest.startswith("{"):
            correction, kind = Correction(arguments=jsonio.loads(rest, "/fix")), Call
        else:
            correction, kind = Correction(content=rest), Assistant
        # the answer's last turn of that kind; without one, its last turn (a reply that should have been a search)
        index = (last.model_turns(kind) or last.model_turns())[-1][0]
        stored = store.rate(last.completion_id, index, correction=correction)
        return f"[fixed] {describe(stored.original)} -> {describe(stored.correction)}"
    except ToolTuneError as e:
        return f"[feedback not kept] {e}"


def chat_loop(session: Session, stdin: TextIO, stdout: TextIO, prompt: str = "you> ", feedback: Any = None,
              run: str = "") -> int:
    """Run until /exit or end of input; returns the number of user turns answered. `feedback`: a
    `tooltune.feedback.FeedbackStore` that records every answer (as the run `run`) and takes /good /bad /fix."""
    print(HELP if feedback is None else f"{HELP}\n{FEEDBACK_HELP}", file=stdout)
    answered = 0
    last: Answer | None = None
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
            last = None
            print("[conversation reset]", file=stdout)
            continue
        if text.split()[0] in ("/good", "/bad", "/fix"):
            print(give_feedback(text, last, feedback), file=stdout)
            continue
        if text.startswith("/"):
            print(f"[unknown command {text.split()[0]}] {HELP}", file=stdout)
            continue
        try:
            exchange = session.send(text)
        except ToolTuneError as e:  # e.g. a conversation too long for the prompt: the turn is undone
            print(f"[error] {e} (the turn was not kept; /reset starts over)", file=stdout)
            continue
        if feedback is not None:
            first = len(session.history) - len(exchange.turns)  # the model was given the turns before these
            last = Answer(new_completion_id(), first, tuple(exchange.turns))
            feedback.record(last.completion_id, session.history[:first], exchange.turns, run, "chat")
        print(show_exchange(exchange), file=stdout)
        answered += 1
