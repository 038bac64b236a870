"""Tables learned from train calls: facility phrases and the sentence templates that name a hotel.

Facilities: about 85% of the facility strings in train calls occur word for word in the user's sentence (the data
keeps the user's own paraphrase, "能打国际长途"), so the lexicon is every such string; a sentence's facilities are its
longest non-overlapping lexicon matches. The rest (a canonical name for a paraphrase: "无障碍设施" -> "残疾人设施"
when a later call carries it over) is a rename table counted from consecutive calls.
Names: train's name queries follow a few templates ("我想订一下那个{}，帮我查查"); a template is the sentence with the
gold name cut out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tooltune.dialogue import Call, User
from tooltune.baseline.units import Unit


def last_user(history) -> str:
    for turn in reversed(history):
        if isinstance(turn, User):
            return turn.content
    return ""


def last_call(history) -> Call | None:
    for turn in reversed(history):
        if isinstance(turn, Call):
            return turn
    return None


@dataclass
class Lexicon:
    facilities: list[str] = field(default_factory=list)
    """Facility strings seen verbatim in a train user sentence, longest first (so the longest match wins)."""
    renames: dict[str, str] = field(default_factory=dict)
    """Carried-over facility -> the name the next call gives it, where train does that more often than not."""
    name_templates: list[tuple[str, str]] = field(default_factory=list)
    """(prefix, suffix) around the hotel name in train's name queries, most specific first."""

    @classmethod
    def learn(cls, units: list[Unit], min_count: int = 1) -> "Lexicon":
        seen: Counter = Counter()
        kept: Counter = Counter()
        moved: Counter = Counter()
        templates: Counter = Counter()
        for unit in units:
            if not isinstance(unit.gold, Call):
                continue
            text, args = last_user(unit.history), unit.gold.arguments
            for fac in args.get("facilities", []):
                if fac in text:
                    seen[fac] += 1
            name = args.get("name")
            if isinstance(name, str) and name and text.count(name) == 1:
                prefix, suffix = text.split(name)
                templates[(prefix, suffix)] += 1
            prev = last_call(unit.history)
            if prev is not None:
                _count_renames(prev.arguments.get("facilities", []), args.get("facilities", []), text, kept, moved)
        facilities = sorted((f for f, n in seen.items() if n >= min_count), key=lambda f: (-len(f), f))
        renames = {old: new for (old, new), n in moved.items() if n > kept[old]}
        # The most frequent template first: "我想订一下那个{}，帮我查查" must win over a rare "...那个{}酒店，帮我查查".
        ordered = sorted(templates, key=lambda t: (-templates[t], -len(t[0]) - len(t[1])))
        return cls(facilities, renames, ordered)

    def find_facilities(self, text: str) -> list[str]:
        """The longest non-overlapping lexicon entries in `text`, in the order they occur."""
        taken = [False] * len(text)
        found: list[tuple[int, str]] = []
        for fac in self.facilities:
            start = text.find(fac)
            while start >= 0:
                end = start + len(fac)
                if not any(taken[start:end]):
                    taken[start:end] = [True] * len(fac)
                    found.append((start, fac))
                    break
                start = text.find(fac, start + 1)
        return [fac for _, fac in sorted(found)]

    def find_name(self, text: str, known_names: list[str] = ()) -> str | None:
        """The hotel name a sentence asks for, by the most specific template that matches, or None.

        With `known_names` (the hotel database), a candidate must share a 2-character piece with a known name so
        that "我想找个评分高的酒店" is not taken for a name query.
        """
        for prefix, suffix in self.name_templates:
            if len(prefix) + len(suffix) < 3 or not text.startswith(prefix) or not text.endswith(suffix):
                continue
            middle = text[len(prefix):len(text) - len(suffix)] if suffix else text[len(prefix):]
            if not middle or len(middle) > 20 or any(ch.isdigit() for ch in middle) and len(middle) < 3:
                continue
            if any(ch in middle for ch in "，。？！,?!、") or "评分" in middle or "价格" in middle:
                continue
            if known_names and not _looks_like_name(middle, known_names):
                continue
            return middle
        return None


def _looks_like_name(middle: str, known_names) -> bool:
    core = middle.removesuffix("酒店") or middle
    return any(core in name for name in known_names)


def _count_renames(before: list[str], after: list[str], text: str, kept: Counter, moved: Counter) -> None:
    """Pair facilities of two consecutive calls that the user did not restate: kept as is, or renamed."""
    gone = [f for f in before if f not in after]
    new = [f for f in after if f not in before and f not in text]
    for fac in before:
        if fac in after:
            kept[fac] += 1
    if len(gone) == 1 and len(new) == 1:
        moved[(gone[0], new[0])] += 1
