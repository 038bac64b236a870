"""CrossWOZ -> seed hotel dialogues (user / search / return / assistant turns), the shape of the course's seeds.

Two inputs:

- `hotel/agiclass_hotel_chatbot/dialog.json`: 3659 hotel sub-dialogues the course extracted from CrossWOZ train.
  Each `usr` turn carries `dsl` (the constraints so far: `price.range.low`, `rating.range.high`, `type`,
  `facilities`, ...) and usually `hotels` (the hotels the reply names). As in the course's seeds, every user turn
  becomes a search with the dsl as arguments; `hotels` becomes the return turn (absent `hotels`: an unanswered search).
- the official zips (`crosswoz/{train,val,test}.json.zip`): full multi-domain dialogues. A hotel part is a run of
  user turns with a 酒店 dialog act, each with the system reply after it. A user turn becomes a search when the
  reply's hotel query (`sys_state_init`, the constraints as the user gave them; `sys_state` holds the system's
  relaxed query) differs from the last search; otherwise it is a question about the hotels already returned and
  gets a plain reply. Records are the reply's `sys_state` `selectedResults`. A part starts at its first search.

Whatever cannot be mapped (a hotel missing from the database, a price like "4.5元以上", constraints on nearby
places, which the tool cannot express) removes the part, or cuts it before the turn, and is returned as `Removed`.
"""

from __future__ import annotations

import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from tooltune import jsonio
from tooltune.dataset.items import Item, Removed, make_item
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Result, Turn, User
from tooltune.errors import InputError

DSL_KEYS = {"name": "name", "type": "type", "facilities": "facilities",
            "price.range.low": "price_range_lower", "price.range.high": "price_range_upper",
            "rating.range.low": "rating_range_lower", "rating.range.high": "rating_range_upper"}
"""dialog.json's dsl keys -> the tool's argument names."""

HOTEL_TYPES = tuple(HOTEL_TOOL.parameters["properties"]["type"]["enum"])
# CrossWOZ's hotel query slots in the order the tool lists its arguments; the 周边 slots have no argument.
_SLOTS = ("名称", "酒店类型", "酒店设施", "价格", "评分")
_NEARBY_SLOTS = ("周边景点", "周边餐馆", "周边酒店")
_MIN_PRICE = 20  # "4.5元以上" is a rating typed into the price slot; no Beijing hotel costs under 20 yuan


class Unmappable(ValueError):
    """A CrossWOZ value the tool's arguments cannot express; `reason` is the report's counted phrase."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_price(text: str) -> dict[str, int | float]:
    """"300-400元" -> lower 300, upper 400; "1000元以上" -> lower; "450元以下" -> upper."""
    t = text.strip().replace(" ", "")
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)元?", t):
        args = {"price_range_lower": _number(m[1]), "price_range_upper": _number(m[2])}
    elif m := re.fullmatch(r"(\d+(?:\.\d+)?)元?以上", t):
        args = {"price_range_lower": _number(m[1])}
    elif m := re.fullmatch(r"(\d+(?:\.\d+)?)元?以下", t):
        args = {"price_range_upper": _number(m[1])}
    else:
        raise Unmappable("unparsed price", text)
    if any(v < _MIN_PRICE for v in args.values()):
        raise Unmappable("implausible price", text)
    return args


def parse_rating(text: str) -> dict[str, float]:
    """"4.5分以上" -> lower 4.5; "5分" -> lower = upper = 5 (as the course's dsl writes it); "4-4.5分" -> both."""
    t = text.strip().replace(" ", "")
    if m := re.fullmatch(r"(\d(?:\.\d+)?)分?以上", t):
        return {"rating_range_lower": float(m[1])}
    if m := re.fullmatch(r"(\d(?:\.\d+)?)分?以下", t):
        return {"rating_range_upper": float(m[1])}
    if m := re.fullmatch(r"(\d(?:\.\d+)?)-(\d(?:\.\d+)?)分?", t):
        return {"rating_range_lower": float(m[1]), "rating_range_upper": float(m[2])}
    if m := re.fullmatch(r"(\d(?:\.\d+)?)分", t):
        return {"rating_range_lower": float(m[1]), "rating_range_upper": float(m[1])}
    raise Unmappable("unparsed rating", text)


def parse_type(text: str) -> str:
    t = text.strip()
    t = t if t.endswith("型") else t + "型"  # CrossWOZ users also write "经济", "高档"
    if t not in HOTEL_TYPES:
        raise Unmappable("unknown hotel type", text)
    return t


def state_arguments(state: dict[str, Any]) -> dict[str, Any]:
    """A CrossWOZ 酒店 query (`sys_state_init["酒店"]`) as `search_hotels` arguments."""
    for slot in _NEARBY_SLOTS:
        if state.get(slot):
            raise Unmappable("constraint on nearby places", f"{slot}={state[slot]}")
    args: dict[str, Any] = {}
    for slot in _SLOTS:
        value = state.get(slot)
        if not value:
            continue
        if slot == "名称":
            args["name"] = value.strip()
        elif slot == "酒店类型":
            args["type"] = parse_type(value)
        elif slot == "酒店设施":  # several facilities are written space-separated (see crosswoz/database.md)
            args["facilities"] = value.split() if isinstance(value, str) else list(value)
        elif slot == "价格":
            args.update(parse_price(value))
        else:
            args.update(parse_rating(value))
    return args


def _records(names: list[str], hotels: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    missing = [n for n in names if n not in hotels]
    if missing:
        raise Unmappable("unknown hotel", ", ".join(missing))
    return [dict(hotels[n], facilities=list(hotels[n]["facilities"])) for n in names]


# ---- dialog.json (the course's extraction) --------------------------------------------------------------------

def _dsl_turns(dialog: Any, hotels: dict[str, dict[str, Any]]) -> list[Turn]:
    if not isinstance(dialog, list) or not dialog:
        raise Unmappable("invalid turns", "a dialogue must be a non-empty list of turns")
    turns: list[Turn] = []
    for i, t in enumerate(dialog):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or t.get("role") not in ("usr", "sys"):
            raise Unmappable("invalid turns", f"turn {i} is not a usr/sys turn with a string content")
        if t["role"] == "sys":
            turns.append(Assistant(t["content"]))
            continue
        turns.append(User(t["content"]))
        dsl = t.get("dsl") or {}
        unknown = [k for k in dsl if k not in DSL_KEYS]
        if unknown:
            raise Unmappable("unknown dsl key", ", ".join(unknown))
        turns.append(Call({DSL_KEYS[k]: v for k, v in dsl.items()}))
        if "hotels" in t:
            turns.append(Result(_records(list(t["hotels"]), hotels)))
    return turns


def load_dialog_json(path: Path, hotels: dict[str, dict[str, Any]], source: str,
                     limit: int | None = None) -> tuple[list[Item], list[Removed]]:
    """The course's hotel sub-dialogues (`dialog.json`; the first `limit`) as items; unmappable ones as `Removed`."""
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise InputError("expected a JSON list of dialogues", where=str(path))
    items, removed = [], []
    for i, dialog in enumerate(raw[:limit]):
        try:
            items.append(make_item(_dsl_turns(dialog, hotels), source, str(i)))
        except Unmappable as e:
            removed.append(Removed(source, str(i), e.reason, e.detail))
        except InputError as e:  # turn order the dialogue model refuses (two sys turns in a row, ...)
            removed.append(Removed(source, str(i), "invalid turns", e.message))
    return items, removed


# ---- the official zips (full multi-domain dialogues) ----------------------------------------------------------

def _is_hotel_turn(message: dict[str, Any]) -> bool:
    return message.get("role") == "usr" and any(a[1] == "酒店" for a in message.get("dialog_act", []))


def _asks_nearby(message: dict[str, Any]) -> bool:
    return any(a[0] == "Request" and a[1] == "酒店" and a[2] in _NEARBY_SLOTS for a in message.get("dialog_act", []))


def hotel_parts(messages: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """The runs of (user turn with a 酒店 act, system reply) pairs of one CrossWOZ dialogue."""
    parts, current = [], []
    for i in range(0, len(messages) - 1, 2):
        usr, sys = messages[i], messages[i + 1]
        if _is_hotel_turn(usr) and sys.get("role") == "sys":
            current.append((usr, sys))
        elif current:
            parts.append(current)
            current = []
    if current:
        parts.append(current)
    return parts


def part_turns(part: list[tuple[dict[str, Any], dict[str, Any]]],
               hotels: dict[str, dict[str, Any]]) -> tuple[list[Turn], str | None]:
    """Seed turns of one hotel part, and why it was cut short (None when whole).

    Raises `Unmappable` when not even its first search can be mapped.
    """
    turns: list[Turn] = []
    last_args: dict[str, Any] | None = None
    leading = 0  # user turns before the first search: questions about a hotel found in another domain
    for k, (usr, sys) in enumerate(part):
        hotel_init = sys.get("sys_state_init", {}).get("酒店", {})
        hotel_final = sys.get("sys_state", {}).get("酒店", {})
        try:
            if _asks_nearby(usr):
                raise Unmappable("asks for nearby places", usr["content"])
            args = state_arguments(hotel_init)
            if args and args != last_args:
                records = _records(list(hotel_final.get("selectedResults", [])), hotels)
                turns += [User(usr["content"]), Call(args), Result(records), Assistant(sys["content"])]
                last_args = args
            elif last_args is not None:  # a question about the hotels already returned
                turns += [User(usr["content"]), Assistant(sys["content"])]
            else:
                leading += 1
        except Unmappable as e:
            if not turns:
                raise
            return turns, f"{e.reason} at part turn {k}: {e.detail}"
    if not turns:
        raise Unmappable("no hotel search", "no turn of the part sets a hotel constraint")
    return turns, (f"{leading} leading turn(s) without a search" if leading else None)


def load_crosswoz_zip(path: Path, hotels: dict[str, dict[str, Any]], source: str,
                      limit: int | None = None) -> tuple[list[Item], list[Removed]]:
    """Hotel parts of the dialogues (the first `limit` by id) in a CrossWOZ `*.json.zip`.

    A part cut short is kept and listed as well (`Removed(kept=True)`).
    """
    raw = _read_zip(str(path), Path(path).stat().st_mtime_ns)
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object of dialogues keyed by id", where=str(path))
    items, removed = [], []
    for dialogue_id in sorted(raw, key=lambda k: (len(k), k))[:limit]:
        messages = raw[dialogue_id].get("messages", []) if isinstance(raw[dialogue_id], dict) else []
        for k, part in enumerate(hotel_parts(messages)):
            index = f"{dialogue_id}/{k}"
            try:
                turns, cut = part_turns(part, hotels)
                items.append(make_item(turns, source, index))
                if cut:
                    removed.append(Removed(source, index, "cut short", cut, kept=True))
            except Unmappable as e:
                removed.append(Removed(source, index, e.reason, e.detail))
    return items, removed


@lru_cache(maxsize=4)
def _read_zip(path: str, mtime_ns: int) -> Any:
    """The parsed JSON inside a CrossWOZ zip (cached: parsing is most of a quick build; callers do not modify it)."""
    try:
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith(".json")]
            if len(members) != 1:
                raise InputError(f"expected one .json file in the zip, found {members}", where=path)
            member = f"{path}!{members[0]}"
            return jsonio.loads(jsonio.decode_utf8(z.read(members[0]), member), member, line=1)
    except zipfile.BadZipFile as e:
        raise InputError(f"not a CrossWOZ zip: {e}", where=path) from None


def _read_json(path: Path) -> Any:
    return jsonio.read_json(path)
