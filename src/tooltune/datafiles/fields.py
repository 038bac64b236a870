"""Small checks every format reader shares: typed field access with errors that name file, line and field."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import Dialogue, Tool, Turn
from tooltune.errors import InputError

_NAMES = {dict: "an object", list: "a list", str: "a string"}


def need(obj: dict[str, Any], key: str, kind: type, where: str, field: str) -> Any:
    """`obj[key]`, which must exist and be a `kind`; `field` is the path shown in errors (e.g. `messages[3]`)."""
    if key not in obj:
        raise InputError(f"missing key {key!r}", where=where, field=field)
    value = obj[key]
    if not isinstance(value, kind):
        raise InputError(f"{key!r} must be {_NAMES.get(kind, kind.__name__)}, got {type(value).__name__}",
                         where=where, field=f"{field}.{key}" if field else key)
    return value


def need_object(value: Any, where: str, field: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", where=where, field=field or None)
    return value


def json_string(text: Any, kind: type | tuple[type, ...], where: str, field: str) -> Any:
    """Decode a field that holds JSON as a string (LLaMA-Factory's `tools`, OpenAI's `arguments`)."""
    if not isinstance(text, str):
        raise InputError(f"must be a JSON string, got {type(text).__name__}", where=where, field=field)
    value = jsonio.loads(text, where, field)
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
        raise InputError(f"must hold {wanted}, got {type(value).__name__}", where=where, field=field)
    return value


def records_of(value: Any, where: str, field: str) -> list[dict[str, Any]]:
    """A tool's output as records: a list of objects (a search's hotels)."""
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InputError("a tool result must be a list of objects (records)", where=where, field=field)
    return value


def tools_of(specs: Any, where: str, field: str) -> tuple[Tool, ...]:
    if not isinstance(specs, list):
        raise InputError(f"must be a list of tools, got {type(specs).__name__}", where=where, field=field)
    return tuple(Tool.from_dict(spec, where=where) for spec in specs)


def read_each(recs: Iterable[tuple[str, Any]], report: Any,
              parse: Callable[[Any, str, Counter], Dialogue]) -> None:
    """The read loop of a format whose records are each one dialogue: `parse(value, where, counts)`.

    `report` is a `tooltune.datafiles.ReadReport`: dialogues are appended to it, invalid records go to its `reject`.
    """
    for where, value in recs:
        try:
            report.dialogues.append(parse(value, where, report.counts))
        except InputError as e:
            report.reject(e)


def record_id(where: str) -> str:
    """A dialogue id from where it was read: `0001.json`, `test.chatglm3.jsonl:5`."""
    return Path(where).name


def build_dialogue(turns: list[Turn], sources: list[str], tools: tuple[Tool, ...], where: str) -> Dialogue:
    """A checked `Dialogue`; an order error names the source field (`messages[4]`), not the turn index."""
    try:
        return Dialogue(tuple(turns), tools=tools, id=record_id(where), where=where)
    except InputError as e:
        index = e.field[len("turns["):-1] if e.field and e.field.startswith("turns[") else ""
        if index.isdigit() and int(index) < len(sources):
            raise InputError(e.message, where=where, field=sources[int(index)]) from None
        raise
