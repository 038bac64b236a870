"""Tables learned from train calls (and the hotel database): facility phrases and hotel names.

Facilities: about 85% of the facility strings in train calls occur word for word in the user's sentence (the data
keeps the user's own paraphrase, "能打国际长途"), so the lexicon is every such string; a sentence's facilities are its
longest non-overlapping lexicon matches, plus a small paraphrase table ("早餐" -> "早餐服务"). A carried-over
paraphrase gets its database name ("无障碍设施" -> "残疾人设施"), as train's later calls always write it.
Names (`NameFinder`): the database's names in the forms users say them ("北京京燕饭店" -> "京燕饭店"), spelled as
train's calls spell them; for chains the database holds only with a branch, the words that introduce a name
("叫…", "那个…") and train's sentence templates ("我想订一下那个{}，帮我查查").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tooltune.dialogue import Call, User
from tooltune.evaluate.units import Unit


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
    canonical: list[str] = field(default_factory=list)
    """The database's facility names. Train's calls never carry a paraphrase over: a later call writes the
    database name for it (58 times in 58), the one `canonical_name` picks (right 55 times in 58)."""
    name_templates: list[tuple[str, str]] = field(default_factory=list)
    """(prefix, suffix) around the hotel name in train's name queries, most specific first."""
    paraphrases: dict[str, str] = field(default_factory=dict)
    """Phrase of a sentence -> the facility train's calls write for it ("早餐" -> "早餐服务"), where that happens
    more often than the phrase is written as is, and at least twice."""

    @classmethod
    def learn(cls, units: list[Unit], min_count: int = 1, min_precision: float = 0.4) -> "Lexicon":
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
        lexicon = cls(facilities=facilities, renames=renames, name_templates=ordered)
        lexicon.paraphrases = lexicon._learn_paraphrases(units, min_count)
        lexicon._drop_unreliable(units, min_precision)
        return lexicon

    def _drop_unreliable(self, units: list[Unit], min_precision: float) -> None:
        """Drop phrases train's calls write less than `min_precision` of the times the sentence has them: a few
        annotations hold a whole clause as one facility. (A bare "wifi" is written 15 times in 31: dev F1 is best
        keeping it, with any threshold from 0 to 0.4.)"""
        found: Counter = Counter()
        kept: Counter = Counter()
        for unit in units:
            if isinstance(unit.gold, Call):
                gold = unit.gold.arguments.get("facilities", [])
                for phrase, fac in self._matches(last_user(unit.history)):
                    found[phrase] += 1
                    kept[phrase] += fac in gold
        bad = {p for p, n in found.items() if kept[p] < min_precision * n}
        self.facilities = [f for f in self.facilities if f not in bad]
        self.paraphrases = {p: f for p, f in self.paraphrases.items() if p not in bad}

    def _learn_paraphrases(self, units: list[Unit], min_count: int) -> dict[str, str]:
        """Pair what a sentence says with the facility its call writes when the two differ, and keep the pairs
        train shows more often than the phrase standing for itself (and at least twice above `min_count`)."""
        votes: Counter = Counter()
        as_is: Counter = Counter()
        for unit in units:
            if not isinstance(unit.gold, Call):
                continue
            text, gold = last_user(unit.history), unit.gold.arguments.get("facilities", [])
            prev = last_call(unit.history)
            carried = prev.arguments.get("facilities", []) if prev else []
            unexplained = [g for g in gold if g not in text and g not in carried]
            matched = self.find_facilities(text)
            as_is.update(m for m in matched if m in gold)
            unused = [m for m in matched if m not in gold]
            if len(unexplained) == 1 and len(unused) == 1:
                votes[(unused[0], unexplained[0])] += 1
                continue
            for g in unexplained:
                key = _common_piece(text, g)
                if key and not any(key in m for m in matched):
                    votes[(key, g)] += 1
        best: dict[str, tuple[int, str]] = {}
        for (key, g), n in votes.items():
            if n > max(as_is[key], min_count) and n > best.get(key, (0, ""))[0]:
                best[key] = (n, g)
        return {key: g for key, (n, g) in best.items()}

    def find_facilities(self, text: str) -> list[str]:
        """The longest non-overlapping lexicon entries and paraphrases in `text`, in the order they occur, each
        paraphrase replaced by the facility it stands for."""
        return list(dict.fromkeys(fac for _, fac in self._matches(text)))

    def _matches(self, text: str) -> list[tuple[str, str]]:
        """(lexicon phrase, facility it gives) for each match in `text`, in order."""
        phrases = self.facilities
        if self.paraphrases:
            phrases = sorted(set(self.facilities) | set(self.paraphrases), key=lambda f: (-len(f), f))
        taken = [False] * len(text)
        found: list[tuple[int, str]] = []
        for fac in phrases:
            start = text.find(fac)
            while start >= 0:
                end = start + len(fac)
                if not any(taken[start:end]):
                    taken[start:end] = [True] * len(fac)
                    found.append((start, fac))
                    break
                start = text.find(fac, start + 1)
        return [(fac, self.paraphrases.get(fac, _widen(text, start, fac))) for start, fac in sorted(found)]

    def canonical_name(self, facility: str) -> str:
        """The name a later call gives a carried facility: as train renames it, else itself if the database has
        it, else the database name sharing the most characters and character pairs with it."""
        if facility in self.renames or not self.canonical or facility in self.canonical:
            return self.renames.get(facility, facility)
        mine = _pieces(facility)
        return max(self.canonical, key=lambda c: (len(mine & _pieces(c)) / len(mine | _pieces(c)), c))

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


_NETWORK = re.compile(r"(?:提供)?(?:wifi|WIFI|Wifi|无线网络|无线网|网络)")
_CLAUSE_START = re.compile(r".*(?:[，。？！、,.?!；;：:\s]|并且|而且|还有|希望是|希望|要求|最好是|最好|能够|可以|需要|要有|有没有|有无)")
_PLACE_START = re.compile(r"所有|公共|酒店内|酒店各处|酒店所有|部分|一些|各处|每个|全部|房间|客房")


def _widen(text: str, start: int, phrase: str) -> str:
    """A network facility the user locates ("公共区域和一些房间都有wifi") is written whole in the calls: widen a
    bare "wifi" match leftwards to the start of its clause when that part names where the network is."""
    if not _NETWORK.fullmatch(phrase):
        return phrase  # only a bare network word: "无处不wifi" says where already
    left = text[:start]
    cut = _CLAUSE_START.match(left)
    clause = left[cut.end():] if cut else left
    place = _PLACE_START.search(clause)  # the clause may open with other words: "找个提供…和一些房间有wifi"
    return clause[place.start():] + phrase if place else phrase


def _pieces(text: str) -> set[str]:
    return {text[i:i + n] for n in (1, 2) for i in range(len(text) - n + 1)}


def _common_piece(text: str, target: str, shortest: int = 2) -> str | None:
    """The longest piece of `target` (at least `shortest` characters) that occurs in `text`."""
    for length in range(len(target), shortest - 1, -1):
        for start in range(len(target) - length + 1):
            piece = target[start:start + length]
            if piece in text:
                return piece
    return None


def name_variants(name: str) -> set[str]:
    """The ways a user names a database hotel: '北京三元桥亚朵酒店(原X店)' -> itself, without the city prefix, without
    the parenthesised branch, both."""
    out = {name}
    bare = re.sub(r"[(（][^)）]*[)）]", "", name).strip()
    out.add(bare)
    for form in list(out):
        for city in ("北京市", "北京"):
            if form.startswith(city) and len(form) > len(city) + 1:
                out.add(form[len(city):])
    return {v for v in out if len(v) >= 3}


class NameFinder:
    """Hotel names in a sentence, by the longest database-name variant it contains, then the spelling train's calls
    give that variant (train writes "汉庭" where the user says "汉庭酒店")."""

    def __init__(self, known_names, units=()):
        self.variants = sorted({v for n in known_names for v in name_variants(n)}, key=lambda v: (-len(v), v))
        votes: dict[str, Counter] = {}
        for unit in units:
            if isinstance(unit.gold, Call) and isinstance(unit.gold.arguments.get("name"), str):
                text = last_user(unit.history)
                found = self.variant_in(text)
                if found and not _BRANCH.match(text, text.index(found) + len(found)):
                    votes.setdefault(found, Counter())[unit.gold.arguments["name"]] += 1
        self.spelling = {v: c.most_common(1)[0][0] for v, c in votes.items()}
        """Database variant -> the name train's calls write for it (most often)."""

    def variant_in(self, text: str) -> str | None:
        for variant in self.variants:
            if variant in text:
                return variant
        return None

    def find(self, text: str) -> str | None:
        """The database hotel `text` names, spelled as train's calls spell it; a branch the user adds after the
        name ("和颐酒店天坛店") stays part of it."""
        found = self.variant_in(text)
        if not found:
            return None
        branch = _BRANCH.match(text, text.index(found) + len(found))
        return found + branch.group(0) if branch else self.spelling.get(found, found)

    def guess(self, text: str) -> str | None:
        """A name the database does not hold as said (a chain: "帮我找个酒店，叫如家"), from the words that
        introduce a name; it must share two characters in a row with some database name."""
        for m in reversed(list(_NAME_CUE.finditer(text))):
            name = _strip_cues(m.group("n"))
            if name.endswith("酒店") and len(name) >= 4:
                name = name[:-2]  # train writes the chain alone: "亚朵酒店" -> "亚朵"
            if len(name) < 2 or _NOT_NAME.search(name):
                continue
            if any(name[i:i + 2] in v for i in range(len(name) - 1) for v in self.variants):
                return name
        return None


_BRANCH = re.compile(r"(?!这|那)[^，。？！,?!的\s酒]{1,4}店")
_CUE_WORDS = r"叫做|叫|那个|就是|预订|预定|订一间|订一下|订个|订|入住|住在|住|查一下|查查|找个|找一个|找一家|找"
_NAME_CUE = re.compile(rf"(?:{_CUE_WORDS})(?P<n>[^，。？！,?!的]{{2,12}}?)(?:的酒店|的|，|。|？|！|吗|怎么样|这个酒店|$)")
_NOT_NAME = re.compile(r"^(?:有|带|能|要)|(?:型|服务|设施)$|^酒店$")


def _strip_cues(name: str) -> str:
    while True:
        m = re.match(rf"(?:{_CUE_WORDS})", name)
        if not m or m.end() == len(name):
            return name
        name = name[m.end():]


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
