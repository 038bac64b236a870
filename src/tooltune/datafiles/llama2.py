"""The course's Llama-2 turn samples (`*.llama2.jsonl`): one sample per call or reply, with its history.

    {"context": "<JSON string: the seed turns before it>", "response": "<JSON string: the seed turn to predict>"}

Writing is the course's conversion, exactly: for every call (`search`) and reply (`assistant`) turn of a dialogue,
in order, context = `json.dumps(turns[:i], ensure_ascii=False)` and response = `json.dumps(turns[i], ...)`; a search
with no result is simply not followed by a `return` turn. This reproduces `{dev,test}.llama2.jsonl` byte for byte.

Reading groups consecutive samples back into dialogues: a sample continues the current dialogue when its context
starts with the previous sample's context + response; the last sample of a dialogue holds all of it. What the
format cannot keep, and reading therefore cannot give back (the writer counts it):
- turns after a dialogue's last call or reply (a final user turn, or a final `return` after the last call);
- a dialogue with no call or reply at all;
- the tool list (read dialogues get the course's `search_hotels`) and the dialogue id;
- the boundary between two consecutive dialogues when the second begins with the whole of the first: they are
  read as one (the course data has no such pair).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, check_order, turn_from_seed, turn_to_seed
from tooltune.errors import InputError
from tooltune.datafiles.fields import json_string, need, need_object, record_id
from tooltune.datafiles.records import dumps

NAME = "llama2"
DESCRIPTION = "the course's Llama-2 turn samples: context + response JSON strings, one per call or reply"


def looks_like(record: Any) -> bool:
    return isinstance(record, dict) and "context" in record and "response" in record


def _seed_turns(value: Any, where: str) -> list[dict[str, Any]]:
    """The sample's context + response as seed turns (raw JSON), checked: valid turns in a valid order."""
    obj = need_object(value, where)
    jsonio.check_keys(obj, ("context", "response"), where)
    context = json_string(need(obj, "context", str, where, ""), list, where, "context")
    response = json_string(need(obj, "response", str, where, ""), dict, where, "response")
    turns = []
    for i, raw in enumerate(context):
        try:
            turns.append(turn_from_seed(raw, where, i))
        except InputError as e:
            raise InputError(e.message, where=where, field=f"context{(e.field or '')[len('turns'):]}") from None
    try:
        target = turn_from_seed(response, where)
    except InputError as e:
        raise InputError(e.message, where=where, field=f"response{(e.field or '')[len('turn'):]}") from None
    if not isinstance(target, (Call, Assistant)):
        raise InputError(f"the response must be a search or an assistant turn, not {response.get('role')!r}",
                         where=where, field="response.role")
    try:
        check_order(turns + [target], where)
    except InputError as e:
        n = len(turns)
        field = "response" if e.field == f"turns[{n}]" else f"context{(e.field or '')[len('turns'):]}"
        raise InputError(e.message, where=where, field=field) from None
    return context + [response]


def read(records: Iterable[tuple[str, Any]], report: Any) -> None:
    current: list[dict[str, Any]] = []  # the seed turns of the dialogue being grouped
    first_where = ""

    def close() -> None:
        if current:
            turns = tuple(turn_from_seed(t, first_where, i) for i, t in enumerate(current))
            report.dialogues.append(Dialogue(turns, tools=(HOTEL_TOOL,), id=record_id(first_where),
                                             where=first_where))

    for where, value in records:
        try:
            full = _seed_turns(value, where)
        except InputError as e:
            report.reject(e)
            continue
        report.counts["samples grouped into dialogues"] += 1
        if not (current and len(full) > len(current) and full[:len(current)] == current):
            close()
            first_where = where
        current = full
    close()


def samples(dialogue: Dialogue) -> Iterator[dict[str, str]]:
    """The course's samples of one dialogue. Every call or reply has history: a dialogue starts with a user turn."""
    seed = [turn_to_seed(t) for t in dialogue.turns]
    for i in dialogue.targets():
        yield {"context": dumps(seed[:i]), "response": dumps(seed[i])}


def write(dialogues: list[Dialogue], counts: Counter) -> Iterator[Any]:
    for dialogue in dialogues:
        targets = dialogue.targets()
        if not targets:
            counts["dialogues with no call or reply (not kept)"] += 1
            continue
        trailing = len(dialogue.turns) - 1 - targets[-1]
        if trailing:
            counts["turns after the last call or reply (not kept)"] += trailing
        if dialogue.tools != (HOTEL_TOOL,):
            counts["dialogues whose tool list is not search_hotels (tools not kept)"] += 1
        for i in targets:
            counts["call samples" if isinstance(dialogue.turns[i], Call) else "reply samples"] += 1
        yield from samples(dialogue)
