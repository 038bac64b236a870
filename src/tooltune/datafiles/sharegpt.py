"""LLaMA-Factory's sharegpt format with tools (its `data/glaive_toolcall_*` layout).

    {"conversations": [{"from": "human", "value": ...},
                       {"from": "function_call", "value": "{\"name\": ..., \"arguments\": {...}}"},
                       {"from": "observation", "value": "<JSON of the records>"},
                       {"from": "gpt", "value": ...}],
     "tools": "<JSON string of a list of tool specs>"}

A call with no result is written as a `function_call` followed directly by the next `human` turn. tooltune reads
that back, but LLaMA-Factory's loader expects an `observation` after every `function_call` and would drop such a
dialogue: the writer counts them. A `system` prompt is refused (tooltune renders its own) rather than dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, Result, Turn, User
from tooltune.errors import InputError
from tooltune.datafiles.fields import build_dialogue, json_string, need, need_object, read_each, records_of, tools_of
from tooltune.datafiles.records import dumps

NAME = "sharegpt"
DESCRIPTION = "LLaMA-Factory sharegpt: conversations of human/gpt/function_call/observation + tools JSON string"
ROLES = ("human", "gpt", "function_call", "observation")


def looks_like(record: Any) -> bool:
    convs = record.get("conversations") if isinstance(record, dict) else None
    return isinstance(convs, list) and bool(convs) and isinstance(convs[0], dict) and "from" in convs[0]


def _call(value: str, where: str, field: str) -> Call:
    body = json_string(value, (dict, list), where, field)
    if isinstance(body, list):  # LLaMA-Factory's parallel calls: a list of {name, arguments}
        if len(body) != 1:
            raise InputError(f"{len(body)} parallel calls in one turn: tooltune dialogues make one call at a time",
                             where=where, field=field)
        body = body[0]
    body = need_object(body, where, field)
    jsonio.check_keys(body, ("name", "arguments"), where, field)
    name = need(body, "name", str, where, field)
    args = body.get("arguments")
    if isinstance(args, str):  # some writers nest the arguments as a JSON string once more
        args = json_string(args, dict, where, f"{field}.arguments")
    if not isinstance(args, dict):
        raise InputError("'arguments' must be an object", where=where, field=f"{field}.arguments")
    return Call(args, name=name)


def parse(value: Any, where: str, counts: Counter) -> Dialogue:
    obj = need_object(value, where)
    jsonio.check_keys(obj, ("conversations", "tools", "system"), where)
    if obj.get("system"):
        raise InputError("a system prompt is not supported (tooltune renders its own)", where=where, field="system")
    tools = tools_of(json_string(obj["tools"], list, where, "tools"), where, "tools") if "tools" in obj else ()
    turns: list[Turn] = []
    sources: list[str] = []
    for i, raw in enumerate(need(obj, "conversations", list, where, "")):
        fld = f"conversations[{i}]"
        msg = need_object(raw, where, fld)
        jsonio.check_keys(msg, ("from", "value"), where, fld)
        role = msg.get("from")
        if role not in ROLES:
            raise InputError(f"unknown 'from' {role!r} (expected one of {', '.join(ROLES)})", where=where,
                             field=f"{fld}.from")
        text = need(msg, "value", str, where, fld)
        if role == "human":
            turns.append(User(text))
        elif role == "gpt":
            turns.append(Assistant(text))
        elif role == "function_call":
            turns.append(_call(text, where, f"{fld}.value"))
        else:
            name = turns[-1].name if turns and isinstance(turns[-1], Call) else HOTEL_TOOL.name
            turns.append(Result(records_of(json_string(text, list, where, f"{fld}.value"), where, f"{fld}.value"),
                                name=name))
        sources.append(fld)
    return build_dialogue(turns, sources, tools, where)


def read(records: Iterable[tuple[str, Any]], report: Any) -> None:
    read_each(records, report, parse)


def to_record(dialogue: Dialogue, counts: Counter) -> dict[str, Any]:
    conv: list[dict[str, str]] = []
    for turn in dialogue.turns:
        if isinstance(turn, User):
            conv.append({"from": "human", "value": turn.content})
        elif isinstance(turn, Assistant):
            conv.append({"from": "gpt", "value": turn.content})
        elif isinstance(turn, Call):
            conv.append({"from": "function_call", "value": dumps({"name": turn.name, "arguments": turn.arguments})})
        else:
            conv.append({"from": "observation", "value": dumps(turn.records)})
    turns = dialogue.turns
    if any(isinstance(t, Call) and (i + 1 == len(turns) or not isinstance(turns[i + 1], Result))
           for i, t in enumerate(turns)):
        counts["dialogues with a call but no observation (LLaMA-Factory would skip them)"] += 1
    return {"conversations": conv, "tools": json.dumps([t.to_dict() for t in dialogue.tools], ensure_ascii=False)}


def write(dialogues: list[Dialogue], counts: Counter) -> Iterator[Any]:
    for dialogue in dialogues:
        yield to_record(dialogue, counts)
