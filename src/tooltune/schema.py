"""Checking call arguments against a tool's JSON schema (the subset tool schemas use).

Used by the cleaner (arguments outside the schema), the evaluator (valid-call rate) and the database (typed errors).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from tooltune.dialogue import Tool

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class _Short(reprlib.Repr):
    """`repr` cut short: a message must stay readable (and computable) whatever the value, a 1 MB string or an
    integer of 5000 digits (whose plain `repr` raises)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring, self.maxother, self.maxlevel = 60, 60, 3

    def repr_int(self, value: int, level: int) -> str:
        if value and math.log10(abs(value)) >= 30:
            return f"<an integer of {int(math.log10(abs(value))) + 1} digits>"
        return repr(value)


_short = _Short().repr


def _check(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    want = schema.get("type")
    if want in _TYPES:
        ok = isinstance(value, _TYPES[want]) and not (want in ("number", "integer") and isinstance(value, bool))
        if not ok:
            return [f"{path}: expected {want}, got {type(value).__name__} {_short(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {_short(value)} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {_short(value)} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {_short(value)} is above the maximum {schema['maximum']}")
    if want == "array" and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += _check(item, schema["items"], f"{path}[{i}]")
    return problems


def argument_problems(tool: Tool, arguments: Any) -> list[str]:
    """Every way `arguments` breaks `tool`'s schema, as readable sentences; [] when valid.

    Unknown keys are problems (the tool would ignore or reject them), and so are null values.
    """
    if not isinstance(arguments, dict):
        return [f"arguments must be an object, got {type(arguments).__name__}"]
    props: dict[str, Any] = tool.parameters.get("properties", {})
    problems = [f"{k}: unknown argument (known: {', '.join(props)})" for k in arguments if k not in props]
    problems += [f"{k}: required argument missing" for k in tool.parameters.get("required", []) if k not in arguments]
    for key, value in arguments.items():
        if key in props:
            problems += _check(value, props[key], key)
    return problems
