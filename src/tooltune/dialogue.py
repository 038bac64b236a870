"""The one dialogue model every reader, writer, chat format and metric works on.

Raw dicts stop at the readers (`tooltune.datafiles`): past them a dialogue is a `Dialogue` of typed turns whose order is
checked once, here. The seed format (the lecture's 11.2: roles user/search/return/assistant) is the canonical JSON form
of a turn; `turn_to_seed` / `turn_from_seed` convert, and predictions files use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Union

from tooltune import jsonio
from tooltune.errors import InputError


@dataclass(frozen=True)
class Tool:
    """A callable tool, described as OpenAI and ChatGLM3 describe functions: a name and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object (`type: object`, `properties`, `required`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> "Tool":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise InputError("a tool must be an object with a string 'name'", where=where, field="tools")
        jsonio.check_keys(d, ("name", "description", "parameters"), where, "tools")
        params = d.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise InputError("a tool's 'parameters' must be a JSON schema object", where=where, field="tools")
        return cls(d["name"], d.get("description", ""), params)


HOTEL_TOOL = Tool(
    name="search_hotels",
    description="根据用户的需求生成查询条件来查酒店",
    parameters={
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "酒店名称"},
            "type": {"type": "string", "enum": ["豪华型", "经济型", "舒适型", "高档型"], "description": "酒店类型"},
            "facilities": {"type": "array", "items": {"type": "string"}, "description": "酒店能提供的设施列表"},
            "price_range_lower": {"type": "number", "minimum": 0, "description": "价格下限"},
            "price_range_upper": {"type": "number", "minimum": 0, "description": "价格上限"},
            "rating_range_lower": {"type": "number", "minimum": 0, "maximum": 5, "description": "评分下限"},
            "rating_range_upper": {"type": "number", "minimum": 0, "maximum": 5, "description": "评分上限"},
        },
        "required": [],
    },
)
"""The course's `search_hotels` tool, exactly as `*.chatglm3.jsonl` declares it (key order kept: it is rendered)."""


@dataclass(frozen=True)
class User:
    content: str
    role: ClassVar[str] = "user"


@dataclass(frozen=True)
class Call:
    """The model asks a tool to run. `arguments` keeps the key order it was written in."""

    arguments: dict[str, Any]
    name: str = HOTEL_TOOL.name
    role: ClassVar[str] = "call"


@dataclass(frozen=True)
class Result:
    """What the tool returned for the call before it: a list of records (hotels)."""

    records: list[dict[str, Any]]
    name: str = HOTEL_TOOL.name
    role: ClassVar[str] = "result"


@dataclass(frozen=True)
class Assistant:
    content: str
    role: ClassVar[str] = "assistant"


Turn = Union[User, Call, Result, Assistant]

# Which turn may follow which. A call may go unanswered (the course's data has searches with no return: the
# dialogue ends there or the user speaks next); a reply or a call answers the user; a result is followed by the
# reply built from it or by another call.
_NEXT: dict[type, tuple[type, ...]] = {
    User: (Call, Assistant),
    Call: (Result, User),
    Result: (Assistant, Call),
    Assistant: (User,),
}


@dataclass(frozen=True)
class Dialogue:
    """A checked sequence of turns plus the tools the assistant may call.

    Contract: the first turn is a user turn and every turn may follow the one before it (see `_NEXT`);
    a violation raises `InputError` naming `where` and the index of the offending turn.
    """

    turns: tuple[Turn, ...]
    tools: tuple[Tool, ...] = (HOTEL_TOOL,)
    id: str = ""
    where: str | None = field(default=None, compare=False)
    """The file:line this dialogue was read from, for error messages and reports."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))
        object.__setattr__(self, "tools", tuple(self.tools))
        check_order(self.turns, self.where)

    @property
    def calls(self) -> list[Call]:
        return [t for t in self.turns if isinstance(t, Call)]

    def targets(self) -> list[int]:
        """Indexes of the turns a model is asked to produce: every call and every assistant reply."""
        return [i for i, t in enumerate(self.turns) if isinstance(t, (Call, Assistant))]


def check_order(turns: tuple[Turn, ...] | list[Turn], where: str | None = None) -> None:
    if not turns:
        raise InputError("a dialogue needs at least one turn", where=where, field="turns")
    for i, turn in enumerate(turns):
        if not isinstance(turn, (User, Call, Result, Assistant)):
            raise InputError(f"not a turn: {turn!r}", where=where, field=f"turns[{i}]")
    if not isinstance(turns[0], User):
        raise InputError(f"a dialogue must start with a user turn, not {turns[0].role}", where=where, field="turns[0]")
    for i in range(1, len(turns)):
        prev, cur = turns[i - 1], turns[i]
        if not isinstance(cur, _NEXT[type(prev)]):
            allowed = " or ".join(t.role for t in _NEXT[type(prev)])
            raise InputError(f"a {cur.role} turn cannot follow a {prev.role} turn (expected {allowed})",
                             where=where, field=f"turns[{i}]")


# ---- the seed format: the canonical JSON form of a turn -------------------------------------------------------

SEED_ROLES = {"user": User, "search": Call, "return": Result, "assistant": Assistant}
SEED_KEYS = {"user": ("role", "content"), "search": ("role", "arguments", "name"), "return": ("role", "records", "name"),
             "assistant": ("role", "content")}
"""The keys a seed turn of each role may have (`name`: the tool, when not `search_hotels`); any other is an error."""


AS_WRITTEN = "as-written"
"""The default argument order: each call's arguments as the data wrote them."""
MAX_NEW_TOKENS = 256
"""The default bound on the tokens a model generates for one turn (a call or a reply; the course's are far shorter),
for eval, chat, serve and k-fold alike."""
ARGUMENT_ORDERS = (AS_WRITTEN, "schema")
"""How a call's arguments are laid out when rendered: as the data wrote them, or in the tool schema's order."""


def order_arguments(turns: Sequence[Turn], tools: Sequence[Tool], order: str) -> tuple[Turn, ...]:
    """`turns` with each call's arguments in `order`. "schema": the keys in the order the call's tool declares its
    properties (keys it does not declare follow, as written); "as-written": unchanged.

    Why it matters: a model decides each optional key where the key's place comes. The course's calls list keys
    alphabetically, so `type` comes last, after the numbers, far from the words that decide it (bench/results/quality.md).
    """
    if order not in ARGUMENT_ORDERS:
        raise ValueError(f"argument order must be one of {', '.join(ARGUMENT_ORDERS)}, not {order!r}")
    if order == AS_WRITTEN:
        return tuple(turns)
    declared = {tool.name: list(tool.parameters.get("properties", {})) for tool in tools}
    out: list[Turn] = []
    for turn in turns:
        if isinstance(turn, Call) and turn.name in declared:
            args = {k: turn.arguments[k] for k in declared[turn.name] if k in turn.arguments}
            args.update((k, v) for k, v in turn.arguments.items() if k not in args)
            turn = replace(turn, arguments=args)
        out.append(turn)
    return tuple(out)


def with_argument_order(dialogue: Dialogue, order: str) -> Dialogue:
    """`dialogue` with its calls' arguments in `order` (see `order_arguments`), for rendering."""
    return replace(dialogue, turns=order_arguments(dialogue.turns, dialogue.tools, order))


def turn_to_seed(turn: Turn) -> dict[str, Any]:
    """A turn as the lecture writes it: `{"role": "search", "arguments": {...}}` and so on."""
    if isinstance(turn, User):
        return {"role": "user", "content": turn.content}
    if isinstance(turn, Call):
        return {"role": "search", "arguments": turn.arguments}
    if isinstance(turn, Result):
        return {"role": "return", "records": turn.records}
    return {"role": "assistant", "content": turn.content}


def turn_from_seed(d: Any, where: str | None = None, index: int | None = None) -> Turn:
    """Parse one seed turn; errors name `where` and `turns[index]`."""
    fld = f"turns[{index}]" if index is not None else "turn"
    if not isinstance(d, dict):
        raise InputError(f"a turn must be a JSON object, got {type(d).__name__}", where=where, field=fld)
    role = d.get("role")
    if not isinstance(role, str) or role not in SEED_ROLES:  # a list or object role is unhashable: no `in` on it
        raise InputError(f"unknown role {role!r} (expected one of {', '.join(SEED_ROLES)})", where=where,
                         field=f"{fld}.role")
    jsonio.check_keys(d, SEED_KEYS[role], where, fld)
    if role in ("user", "assistant"):
        content = d.get("content")
        if not isinstance(content, str):
            raise InputError("'content' must be a string", where=where, field=f"{fld}.content")
        return User(content) if role == "user" else Assistant(content)
    if role == "search":
        args = d.get("arguments")
        if isinstance(args, str):  # some writers store the arguments as a JSON string
            args = jsonio.loads(args, where or "arguments", f"{fld}.arguments")
        if not isinstance(args, dict):
            raise InputError("'arguments' must be an object", where=where, field=f"{fld}.arguments")
        return Call(args, name=d.get("name", HOTEL_TOOL.name))
    records = d.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError("'records' must be a list of objects", where=where, field=f"{fld}.records")
    return Result(records, name=d.get("name", HOTEL_TOOL.name))


def dialogue_to_seed(dialogue: Dialogue) -> list[dict[str, Any]]:
    return [turn_to_seed(t) for t in dialogue.turns]


def dialogue_from_seed(turns: Any, where: str | None = None, id: str = "",
                       tools: tuple[Tool, ...] = (HOTEL_TOOL,)) -> Dialogue:
    if not isinstance(turns, list):
        raise InputError(f"a seed dialogue must be a JSON list of turns, got {type(turns).__name__}", where=where)
    return Dialogue(tuple(turn_from_seed(t, where, i) for i, t in enumerate(turns)), tools=tools, id=id, where=where)
