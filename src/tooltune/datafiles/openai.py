"""OpenAI chat format with tools (the fine-tuning JSONL of `/v1/fine_tuning`, and what chat requests carry).

    {"messages": [{"role": "user", "content": ...},
                  {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                                                        "function": {"name": ..., "arguments": "<JSON string>"}}]},
                  {"role": "tool", "tool_call_id": "call_0", "content": "<JSON of the records>"},
                  {"role": "assistant", "content": ...}],
     "tools": [{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}]}

A tooltune dialogue makes one call at a time and a call turn carries no text, so an assistant message with several
`tool_calls`, or with both text and `tool_calls`, is refused with its location; so is a `system` message (tooltune
renders its own; the server takes a request's leading system messages apart, `tooltune.bot.api`). Written call
ids are `call_0`, `call_1`, ... within a dialogue; reading checks that each `tool` message answers the call before
it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.errors import InputError
from tooltune.datafiles.fields import build_dialogue, json_string, need, need_object, read_each, records_of, tools_of
from tooltune.datafiles.records import dumps

NAME = "openai"
DESCRIPTION = "OpenAI chat: messages with assistant tool_calls and tool messages + function tools"
MESSAGE_KEYS = {"user": ("role", "content"), "assistant": ("role", "content", "tool_calls"),
                "tool": ("role", "tool_call_id", "content", "name"), "system": ("role", "content"),
                "developer": ("role", "content")}
"""The keys a message of each role may have (a tool message's `name`, the older form, must be its call's); any other
is an error naming it, not ignored."""


def looks_like(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("messages"), list)


def _tools(value: Any, where: str) -> tuple[Tool, ...]:
    if not isinstance(value, list):
        raise InputError("'tools' must be a list", where=where, field="tools")
    specs = []
    for i, item in enumerate(value):
        item = need_object(item, where, f"tools[{i}]")
        jsonio.check_keys(item, ("type", "function"), where, f"tools[{i}]")
        if item.get("type") != "function":
            raise InputError(f"only function tools are supported, not {item.get('type')!r}", where=where,
                             field=f"tools[{i}].type")
        specs.append(need(item, "function", dict, where, f"tools[{i}]"))
    return tools_of(specs, where, "tools")


def _call(msg: dict[str, Any], where: str, fld: str) -> tuple[Call, str]:
    """The one call of an assistant message with `tool_calls`, and its id."""
    calls = need(msg, "tool_calls", list, where, fld)
    if len(calls) != 1:
        raise InputError(f"{len(calls)} parallel tool calls: tooltune dialogues make one call at a time",
                         where=where, field=f"{fld}.tool_calls")
    if msg.get("content"):
        raise InputError("an assistant message with tool_calls must have no text content (a call turn has none)",
                         where=where, field=f"{fld}.content")
    cfld = f"{fld}.tool_calls[0]"
    call = need_object(calls[0], where, cfld)
    jsonio.check_keys(call, ("id", "type", "function"), where, cfld)
    call_id = need(call, "id", str, where, cfld)
    func = need(call, "function", dict, where, cfld)
    jsonio.check_keys(func, ("name", "arguments"), where, f"{cfld}.function")
    name = need(func, "name", str, where, f"{cfld}.function")
    args = json_string(need(func, "arguments", str, where, f"{cfld}.function"), dict, where,
                       f"{cfld}.function.arguments")
    return Call(args, name=name), call_id


def parse(value: Any, where: str, counts: Counter) -> Dialogue:
    obj = need_object(value, where)
    jsonio.check_keys(obj, ("messages", "tools"), where)
    tools = _tools(obj["tools"], where) if "tools" in obj else ()
    turns: list[Turn] = []
    sources: list[str] = []
    pending_id = None  # the id of the call a tool message may answer
    for i, raw in enumerate(need(obj, "messages", list, where, "")):
        fld = f"messages[{i}]"
        msg = need_object(raw, where, fld)
        role = msg.get("role")
        if role in MESSAGE_KEYS:
            jsonio.check_keys(msg, MESSAGE_KEYS[role], where, fld)
        if role == "user":
            turns.append(User(need(msg, "content", str, where, fld)))
        elif role == "assistant" and msg.get("tool_calls") not in (None, [], ""):
            call, pending_id = _call(msg, where, fld)
            turns.append(call)
        elif role == "assistant":
            turns.append(Assistant(need(msg, "content", str, where, fld)))
        elif role == "tool":
            answered = need(msg, "tool_call_id", str, where, fld)
            if not turns or not isinstance(turns[-1], Call) or answered != pending_id:
                before = f"the call {pending_id!r}" if turns and isinstance(turns[-1], Call) else "no call"
                raise InputError(f"a tool message answers the call right before it; this one answers {answered!r} "
                                 f"and follows {before}", where=where, field=f"{fld}.tool_call_id")
            if "name" in msg and msg["name"] != turns[-1].name:
                raise InputError(f"names the tool {msg['name']!r}, but it answers a call of {turns[-1].name!r}",
                                 where=where, field=f"{fld}.name")
            content = json_string(need(msg, "content", str, where, fld), list, where, f"{fld}.content")
            turns.append(Result(records_of(content, where, f"{fld}.content"), name=turns[-1].name))
        elif role in ("system", "developer"):
            raise InputError(f"a {role} message is not supported (tooltune renders its own)", where=where,
                             field=f"{fld}.role")
        else:
            raise InputError(f"unknown role {role!r} (expected user, assistant or tool)", where=where,
                             field=f"{fld}.role")
        sources.append(fld)
    return build_dialogue(turns, sources, tools, where)


def read(records: Iterable[tuple[str, Any]], report: Any) -> None:
    read_each(records, report, parse)


def to_record(dialogue: Dialogue) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    calls = 0
    for turn in dialogue.turns:
        if isinstance(turn, Call):
            function = {"name": turn.name, "arguments": dumps(turn.arguments)}
            messages.append({"role": "assistant",
                             "tool_calls": [{"id": f"call_{calls}", "type": "function", "function": function}]})
            calls += 1
        elif isinstance(turn, Result):
            messages.append({"role": "tool", "tool_call_id": f"call_{calls - 1}", "content": dumps(turn.records)})
        else:
            messages.append({"role": turn.role, "content": turn.content})
    return {"messages": messages, "tools": [{"type": "function", "function": t.to_dict()} for t in dialogue.tools]}


def write(dialogues: list[Dialogue], counts: Counter) -> Iterator[Any]:
    for dialogue in dialogues:
        yield to_record(dialogue)
