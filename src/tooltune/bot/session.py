"""The bot's turn loop: generate; run a call on the local hotel database and feed the records back; generate again.

One user turn (`Session.send`) may hold several searches, bounded by `SessionConfig.max_calls`. A search that cannot
run is never a crash: bad arguments (`SearchError`), a call the model wrote unreadably, or a tool the bot does not
have become a result with one error record `{"error": "..."}` that the model sees, and nothing found is an empty
result. A malformed call whose arguments were read (junk after the JSON) still runs with them; it is counted.
When the model still calls after the bound, that call is kept unanswered (the course's data has such calls: the
user speaks next) and the exchange ends without a reply, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from tooltune.bot.policy import Policy, TurnOptions
from tooltune.db import SearchError
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Result, Turn, User, check_order
from tooltune.errors import InputError
from tooltune.formats import ParsedTurn
from tooltune.jsonio import json_problem


@dataclass(frozen=True)
class SessionConfig:
    max_calls: int = 3
    """Searches run per user turn; a further call is left unanswered and the turn ends without a reply."""
    limit: int = 3
    """Hotels a search returns (the course's web demo showed 3)."""
    order: str = "rating"
    """How hotels are ranked (`tooltune.db.ORDERS`): "rating" or "database"."""

    def __post_init__(self) -> None:
        if self.max_calls < 0 or self.limit < 1:
            raise InputError(f"max_calls must be >= 0 and limit >= 1, got {self.max_calls} and {self.limit}",
                             field="session")


@dataclass(frozen=True)
class Search:
    """One call the model made in this exchange and what running it gave."""

    call: Call
    records: list[dict[str, Any]]
    error: str | None = None
    """Why the search did not run (bad arguments, unreadable call, unknown tool); `records` is then empty."""
    unmatched: list[str] = field(default_factory=list)
    """Facility phrases the database could not map; they were not used as filters."""
    executed: bool = True
    """False for a call past `max_calls`: it was not run and no result was fed back."""

    def result_records(self) -> list[dict[str, Any]]:
        """What the model is shown: the records, or one error record."""
        return [{"error": self.error}] if self.error is not None else self.records


@dataclass
class Exchange:
    """What one user turn produced."""

    searches: list[Search] = field(default_factory=list)
    reply: str | None = None
    """The final text; None when the call bound was hit (see `stopped`)."""
    malformed: int = 0
    """Model turns the format could not read cleanly (they were used as best read; see `raw`)."""
    raw: list[str] = field(default_factory=list)
    """Every generated text of the exchange, in order."""
    turns: list[Turn] = field(default_factory=list)
    """The turns added to the history after the user's (calls, results, reply)."""
    prompt_tokens: int = 0
    """Prompt tokens of every model turn of the exchange, summed (each turn's prompt holds the whole history)."""
    completion_tokens: int = 0
    """Tokens the model generated over the exchange."""
    hit_limit: bool = False
    """The last model turn ended at its token limit (a reply cut short; OpenAI's finish_reason "length")."""

    @property
    def stopped(self) -> bool:
        return self.reply is None


class Session:
    """A conversation: its history, a policy that writes the model's turns, a database that answers calls."""

    def __init__(self, policy: Policy, db: Any, config: SessionConfig = SessionConfig(),
                 history: Sequence[Turn] = (), options: TurnOptions = TurnOptions()):
        self.policy, self.db, self.config = policy, db, config
        self.options = options
        """What every model turn is asked with (a request's system text, token limit, sampling, streaming)."""
        self.history: list[Turn] = list(history)
        if self.history:
            check_order(self.history, where="history")

    def reset(self) -> None:
        self.history = []

    def send(self, text: str) -> Exchange:
        """Add a user turn and answer it."""
        if self.history and isinstance(self.history[-1], Result):
            raise InputError("the history ends with a result: call respond() before the next user turn")
        before = len(self.history)
        self.history.append(User(text))
        try:
            return self.respond()
        except BaseException:  # a failed turn leaves no trace: the user may retry, or /reset
            del self.history[before:]
            raise

    def respond(self) -> Exchange:
        """Continue a history that ends with a user or result turn until the model replies or the bound is hit."""
        if not self.history or not isinstance(self.history[-1], (User, Result)):
            raise InputError("respond() needs a history that ends with a user or result turn", field="history")
        out = Exchange()
        calls = 0
        while True:
            step = self.policy.next_turn(tuple(self.history), self.options)
            parsed = readable(step.parsed)
            out.raw.append(step.raw)
            out.malformed += parsed.malformed
            out.prompt_tokens += step.prompt_tokens
            out.completion_tokens += step.new_tokens
            out.hit_limit = step.hit_limit
            turn = parsed.turn
            if isinstance(turn, Assistant):
                self._add(out, turn)
                out.reply = turn.content
                return out
            self._add(out, turn)
            if calls >= self.config.max_calls:
                out.searches.append(Search(turn, [], executed=False))
                return out
            calls += 1
            search = self.run_search(turn, parsed.malformed)
            out.searches.append(search)
            self._add(out, Result(search.result_records(), name=turn.name))

    def _add(self, out: Exchange, turn: Turn) -> None:
        self.history.append(turn)
        out.turns.append(turn)

    def run_search(self, call: Call, malformed: bool = False) -> Search:
        if call.name != HOTEL_TOOL.name:
            return Search(call, [], error=f"unknown tool {call.name!r}: the only tool is {HOTEL_TOOL.name}")
        if malformed and not call.arguments:  # arguments that were read (with junk after them) are still used
            return Search(call, [], error="the call could not be read; write its arguments as one JSON object")
        try:
            found = self.db.search(call.arguments, limit=self.config.limit, order=self.config.order)
        except SearchError as e:
            return Search(call, [], error=e.message)
        return Search(call, found.records, unmatched=list(found.unmatched))


def readable(parsed: ParsedTurn) -> ParsedTurn:
    """A call whose arguments no JSON can hold (NaN, a complex number, a set: what a lenient parse may read) is a
    malformed call with no arguments, as an unreadable one is: it can be neither run nor sent to a client."""
    turn = parsed.turn
    if isinstance(turn, Call) and json_problem(turn.arguments) is not None:
        return ParsedTurn(Call({}, name=turn.name), malformed=True, raw=parsed.raw)
    return parsed
