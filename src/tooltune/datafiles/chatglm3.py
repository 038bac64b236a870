"""The course's ChatGLM3 JSON Lines (`*.chatglm3.jsonl`).

    {"tools": ["<JSON string of a list of tool specs>"],
     "conversations": [{"role": "user", "content": ...},
                       {"role": "assistant", "content": "我需要使用search_hotels工具来查询酒店"},   # filler
                       {"role": "tool", "name": ..., "parameters": {...}, "observation": [records]},
                       {"role": "assistant", "content": ...}, ...]}

A `tool` turn is a call and its result together; `observation` is absent when the search returned nothing to
the dialogue (an unanswered call). The course puts the filler assistant turn before every tool turn; the reader
drops exactly that text right before a tool turn (counted) and the writer puts it back, so that reading and
writing a course file reproduces it byte for byte. `tools` also accepts ChatGLM3's own form, a list of tool objects.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.errors import InputError
from tooltune.datafiles.fields import json_string, need, need_object, build_dialogue, read_each, records_of, tools_of

NAME = "chatglm3"
DESCRIPTION = "the course's ChatGLM3 JSONL: tools + conversations with user/assistant/tool turns"
FILLER = "我需要使用search_hotels工具来查询酒店"
"""The assistant turn the course inserts before each tool turn (it names the hotel tool whatever the call is)."""
TURN_KEYS = {"user": ("role", "content"), "assistant": ("role", "content"),
             "tool": ("role", "name", "parameters", "observation")}
"""The keys a turn of each role may have; any other is an error naming it (a misspelled `observations` would
otherwise lose the hotels without a word)."""


def looks_like(record: Any) -> bool:
    convs = record.get("conversations") if isinstance(record, dict) else None
    return isinstance(convs, list) and bool(convs) and isinstance(convs[0], dict) and "role" in convs[0]


def _tools(value: Any, where: str) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, item in enumerate(value):
        if isinstance(item, str):  # the course: one JSON string holding the whole list
            tools += tools_of(json_string(item, list, where, f"tools[{i}]"), where, f"tools[{i}]")
        else:
            tools += tools_of([item], where, f"tools[{i}]")
    return tuple(tools)


def _is_filler(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") == "assistant" and item.get("content") == FILLER


def _turns(conv: list[Any], where: str, counts: Counter) -> tuple[list[Turn], list[str]]:
    """The turns of `conversations` and, for each, the field it came from (for order errors)."""
    turns: list[Turn] = []
    sources: list[str] = []
    for i, raw in enumerate(conv):
        fld = f"conversations[{i}]"
        t = need_object(raw, where, fld)
        role = t.get("role")
        if role in TURN_KEYS:
            jsonio.check_keys(t, TURN_KEYS[role], where, fld)
        if role in ("user", "assistant"):
            content = need(t, "content", str, where, fld)
            nxt = conv[i + 1] if i + 1 < len(conv) else None
            if _is_filler(t) and isinstance(nxt, dict) and nxt.get("role") == "tool":
                counts["filler turns dropped"] += 1
                continue
            turns.append(User(content) if role == "user" else Assistant(content))
            sources.append(fld)
        elif role == "tool":
            if i == 0 or not _is_filler(conv[i - 1]):
                counts["tool turns without the filler before them (writing adds it)"] += 1
            name = need(t, "name", str, where, fld)
            turns.append(Call(need(t, "parameters", dict, where, fld), name=name))
            sources.append(fld)
            if "observation" in t:
                turns.append(Result(records_of(t["observation"], where, f"{fld}.observation"), name=name))
                sources.append(f"{fld}.observation")
        else:
            raise InputError(f"unknown role {role!r} (expected user, assistant or tool)", where=where,
                             field=f"{fld}.role")
    return turns, sources


def parse(value: Any, where: str, counts: Counter) -> Dialogue:
    obj = need_object(value, where)
    jsonio.check_keys(obj, ("tools", "conversations"), where)
    tools = _tools(need(obj, "tools", list, where, ""), where) if "tools" in obj else ()
    turns, sources = _turns(need(obj, "conversations", list, where, ""), where, counts)
    return build_dialogue(turns, sources, tools, where)


def read(records: Iterable[tuple[str, Any]], report: Any) -> None:
    read_each(records, report, parse)


def to_record(dialogue: Dialogue, counts: Counter) -> dict[str, Any]:
    conv: list[dict[str, Any]] = []
    for turn in dialogue.turns:
        if isinstance(turn, Call):
            conv.append({"role": "assistant", "content": FILLER})
            conv.append({"role": "tool", "name": turn.name, "parameters": turn.arguments})
            counts["filler turns inserted"] += 1
        elif isinstance(turn, Result):
            conv[-1]["observation"] = turn.records  # the tool turn of the call before it
        else:
            conv.append({"role": turn.role, "content": turn.content})
    tools = json.dumps([t.to_dict() for t in dialogue.tools], ensure_ascii=False)
    return {"tools": [tools], "conversations": conv}


def write(dialogues: list[Dialogue], counts: Counter) -> Iterator[Any]:
    for dialogue in dialogues:
        yield to_record(dialogue, counts)
