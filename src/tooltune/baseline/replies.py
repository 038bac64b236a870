"""Replies as templates: a train reply with the record values it states cut out, refilled from the current records.

A slot names where its value came from, relative to the turn being answered: `(back, row, field)` is field `field`
of record `row` of the `back`-th most recent `return` turn (0 = the latest); `(-1, j, "facility")` is the j-th
facility the user's last sentence names ("有吹风机吗？" -> "有吹风机。"). "推荐您去北京新世界酒店。" answered after
one record becomes `["推荐您去", (0, 0, "name"), "。"]`, and refills with whatever hotel the current return holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from tooltune.dialogue import Result, Turn

FIELDS = ("name", "address", "phone", "subway", "type", "price", "rating")
"""Record fields a reply may state, in the order they are cut out (names before numbers: a name may hold digits)."""
MAX_BACK = 2
"""How many `return` turns back a slot may point (replies compare the hotels of at most the last few searches)."""

Slot = tuple[int, int, str]
Piece = Union[str, Slot]


@dataclass(frozen=True)
class Template:
    pieces: tuple[Piece, ...]

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.pieces if not isinstance(p, str)]

    def fill(self, results: list[list[dict[str, Any]]], mentions: list[str] = ()) -> str | None:
        """The reply with every slot refilled from `results` (newest first) and `mentions` (the facilities of the
        user's last sentence), or None where a slot has no value."""
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = slot_value(results, piece, mentions)
            if value is None:
                return None
            out.append(value)
        return "".join(out)


def recent_results(history: tuple[Turn, ...] | list[Turn]) -> list[list[dict[str, Any]]]:
    """The records of the last `MAX_BACK + 1` return turns, newest first."""
    found = [t.records for t in reversed(history) if isinstance(t, Result)]
    return found[:MAX_BACK + 1]


def render(value: Any, field: str) -> str | None:
    """How a reply writes a record value: prices and ratings without a trailing '.0', none for a missing price."""
    if value is None or value == "":
        return None
    if field in ("price", "rating"):
        number = float(value)
        if number < 0:
            return None  # the data's -1.0 means "no price"
        return str(int(number)) if number.is_integer() else str(number)
    return str(value)


def slot_value(results: list[list[dict[str, Any]]], slot: Slot, mentions: list[str] = ()) -> str | None:
    back, row, field = slot
    if back < 0:
        return mentions[row] if row < len(mentions) else None
    if back >= len(results) or row >= len(results[back]):
        return None
    return render(results[back][row].get(field), field)


def _candidates(results: list[list[dict[str, Any]]], mentions: list[str]) -> list[tuple[str, Slot]]:
    """(text, slot) for every value of the recent records and every mention, longest text first (names win over
    the numbers and facility words inside them); a text found in several places keeps its first (record) slot."""
    found: dict[str, Slot] = {}
    for back, records in enumerate(results):
        for row, record in enumerate(records):
            for field in FIELDS:
                text = render(record.get(field), field)
                if text and text not in found:
                    found[text] = (back, row, field)
                # "169.0元": some replies keep the record's float as written.
                raw = record.get(field)
                if field == "price" and isinstance(raw, float) and raw >= 0 and f"{raw}" not in found:
                    found[f"{raw}"] = (back, row, field)
    for j, text in enumerate(mentions):
        found.setdefault(text, (-1, j, "facility"))
    return sorted(found.items(), key=lambda p: -len(p[0]))


def delexicalise(reply: str, results: list[list[dict[str, Any]]], mentions: list[str] = ()) -> Template:
    """Cut every recent record value and mention out of `reply` (numbers only where no digit touches them)."""
    pieces: list[Piece] = [reply]
    for text, slot in _candidates(results, list(mentions)):
        if slot[2] in ("price", "rating"):
            pattern = re.compile(rf"(?<![\d.]){re.escape(text)}(?![\d]|\.\d)")
        elif len(text) < 2:
            continue
        else:
            pattern = re.compile(re.escape(text))
        pieces = _cut(pieces, pattern, slot)
    return Template(tuple(p for p in pieces if p != ""))


def _cut(pieces: list[Piece], pattern: re.Pattern, slot: Slot) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if not isinstance(piece, str):
            out.append(piece)
            continue
        last = 0
        for m in pattern.finditer(piece):
            out += [piece[last:m.start()], slot]
            last = m.end()
        out.append(piece[last:])
    return out
