"""Mapping the facility phrases people ask for onto the hotel database's 37 facility names.

About a third of the facility arguments in the course's data are paraphrases ("能打国际长途" for "国际长途电话").
A `FacilityMatcher` maps a phrase in three steps, first hit wins:

1. exact: the phrase (whitespace stripped, ASCII lower-cased) is a database facility name;
2. the paraphrase table: aliases learned from the course's train dialogues (`learn_paraphrases`), then the
   hand-written `HAND_RULES` for phrases train never shows;
3. character n-gram similarity (`similarity`) with the closest database name, if it reaches `threshold`.

A phrase that maps to nothing gives None: the caller reports it instead of guessing.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping

# The course stores some records' facilities as one string, "酒店提供的设施:a;b;c" (raw/enhanced_more/named.json).
_STRING_PREFIX = re.compile(r"^\s*酒店提供的设施\s*[:：]\s*")
# A run of ASCII letters/digits is one token ("wifi", "spa", "24"); any other non-space character is its own token.
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# The database says "wifi"; people also say 无线网络 / 无线网 (the n-gram step treats them as the same token).
_WIRELESS = re.compile(r"无线网络|无线网")
_PUNCT = set("，,。.、；;：:！!？?（）()「」\"'“”‘’ ")

DEFAULT_THRESHOLD = 0.4
"""The least n-gram similarity accepted by default (chosen on train; see bench/results/db.md)."""

HAND_RULES: dict[str, str] = {
    # Phrases whose characters share little with the database name, so that n-grams cannot find them.
    "按摩": "SPA",
    "水疗": "SPA",
    "足疗": "SPA",
    "泡温泉": "温泉",
    "无障碍设施": "残疾人设施",
    "无障碍通道": "残疾人设施",
    "停车场": "收费停车位",
    "停车位": "收费停车位",
    "机场接送": "接机服务",
    "火车站接送": "接站服务",
    "唤醒服务": "叫醒服务",
    "叫早服务": "叫醒服务",
    "洗衣机": "洗衣服务",
    "干洗": "洗衣服务",
    "行李存放": "行李寄存",
    "寄存行李": "行李寄存",
    "托管小孩": "看护小孩服务",
    "儿童看护": "看护小孩服务",
    "国际电话": "国际长途电话",
    "国际通话": "国际长途电话",
    "本地电话免费": "免费市内电话",
    "免费本地通话": "免费市内电话",
    "游泳池": "室内游泳池",
    "泳池": "室内游泳池",
    "中餐厅": "中式餐厅",
    "中餐馆": "中式餐厅",
    "西餐厅": "西式餐厅",
    "西餐馆": "西式餐厅",
    "有线网络": "宽带上网",
    "网线": "宽带上网",
    "热水": "24小时热水",
    "供暖": "暖气",
    "禁烟房": "无烟房",
    "无烟环境": "无烟房",
    "wifi": "酒店各处提供wifi",
    "无线网络": "酒店各处提供wifi",
    "免费早餐": "早餐服务免费",
    "租车服务": "租车",
    "外宾接待": "接待外宾",
    "会议设施": "会议室",
    "健身设施": "健身房",
}
"""Fallback paraphrases, written by hand; learned aliases take precedence over these."""


def normalize(phrase: str) -> str:
    """The form phrases are compared in: stripped, ASCII lower-cased, inner whitespace removed."""
    return re.sub(r"\s+", "", phrase).lower()


def record_facilities(record: Mapping[str, Any]) -> list[str]:
    """A record's facilities as a list, whether stored as a list or as "酒店提供的设施:a;b;c"."""
    value = record.get("facilities")
    if isinstance(value, str):
        value = _STRING_PREFIX.sub("", value).split(";")
    if not isinstance(value, list):
        return []
    return [f.strip() for f in value if isinstance(f, str) and f.strip()]


@lru_cache(maxsize=8192)
def _grams(phrase: str) -> frozenset[str]:
    phrase = _WIRELESS.sub("wifi", normalize(phrase))
    tokens = [t for t in _TOKEN.findall(phrase) if t not in _PUNCT]
    return frozenset(tokens) | {a + b for a, b in zip(tokens, tokens[1:])}


def similarity(a: str, b: str) -> float:
    """Dice coefficient of the two phrases' token unigrams and bigrams, in [0, 1]; 1.0 for equal phrases."""
    ga, gb = _grams(a), _grams(b)
    if not ga or not gb:
        return 0.0
    return 2 * len(ga & gb) / (len(ga) + len(gb))


@dataclass(frozen=True)
class FacilityMatcher:
    """phrase -> one of `canonical` or None. See the module docstring for the order of the steps."""

    canonical: tuple[str, ...]
    """The database's facility names (37 for CrossWOZ's hotels)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Learned paraphrases, phrase -> canonical name; tried before `HAND_RULES`."""
    threshold: float = DEFAULT_THRESHOLD
    """The least `similarity` the n-gram step accepts."""
    hand_rules: Mapping[str, str] = field(default_factory=lambda: dict(HAND_RULES))
    """Fallback paraphrases; entries naming a facility outside `canonical` are ignored."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical", tuple(dict.fromkeys(self.canonical)))
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        known = {normalize(c): c for c in self.canonical}
        table: dict[str, str] = {}
        # Later sources must not override earlier ones: learned aliases first, then the hand rules.
        for source in (self.aliases, self.hand_rules):
            for phrase, target in source.items():
                if normalize(target) in known:
                    table.setdefault(normalize(phrase), known[normalize(target)])
        object.__setattr__(self, "_exact", known)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_neighbours", tuple(known.items()) + tuple(table.items()))

    @classmethod
    def from_hotels(cls, records: Iterable[Mapping[str, Any]], aliases: Mapping[str, str] | None = None,
                    threshold: float = DEFAULT_THRESHOLD) -> "FacilityMatcher":
        """A matcher whose canonical names are every facility of `records` (in order of first appearance)."""
        names = dict.fromkeys(f for r in records for f in record_facilities(r))
        return cls(tuple(names), dict(aliases or {}), threshold)

    def match(self, phrase: str) -> str | None:
        """The database facility `phrase` means, or None when no step finds one."""
        return self.explain(phrase)[0]

    def explain(self, phrase: str) -> tuple[str | None, str]:
        """(facility or None, the step that decided: "exact", "alias", "ngram" or "none")."""
        key = normalize(phrase)
        if key in self._exact:
            return self._exact[key], "exact"
        if key in self._table:
            return self._table[key], "alias"
        # Nearest neighbour over every phrase with a known meaning: a new wording is usually closer to a learned
        # paraphrase ("酒店内每个角落都有wifi" ~ "酒店每个角落都有wifi") than to the terse database name.
        best, score = None, 0.0
        for known, name in self._neighbours:
            s = similarity(key, known)
            if s > score:
                best, score = name, s
        if best is not None and score >= self.threshold:
            return best, "ngram"
        return None, "none"


def learn_paraphrases(pairs: Iterable[tuple[Iterable[str], Iterable[Mapping[str, Any]]]],
                      min_score: float = 0.15, prior_weight: float = 0.5,
                      margin: float = 0.1) -> dict[str, str]:
    """phrase -> canonical facility, learned from (asked facility phrases, returned records) of search turns.

    The records of a search should all have the facility asked for, so a paraphrase's canonical name is among the
    facilities common to the returned records. Each such candidate gets, per occurrence of the phrase, a vote of
    `similarity(phrase, candidate) + prior_weight * (1 - base rate of candidate)`: the second term lets a phrase
    with no shared characters ("按摩" -> "SPA") win through rare facilities that keep co-occurring with it, while
    ubiquitous ones ("24小时热水", in nearly every hotel) earn nothing from merely being present. Facilities asked
    by name in the same search are no candidates for the others. Canonical names are the facilities seen in records.
    A phrase whose best mean vote is below `min_score`, or whose winner is more than `margin` less similar than the
    closest facility name, is left out. Phrases that are canonical names are not returned.
    """
    occurrences: dict[str, list[set[str]]] = defaultdict(list)
    record_count, facility_count = 0, Counter()
    for phrases, records in pairs:
        records = list(records)
        facility_sets = [set(record_facilities(r)) for r in records]
        record_count += len(records)
        for fs in facility_sets:
            facility_count.update(fs)
        if not facility_sets:
            continue
        common = set.intersection(*facility_sets)
        asked = [p for p in phrases if isinstance(p, str) and p.strip()]
        named = {p for p in asked if p in common}
        for p in asked:
            occurrences[p].append(common - named if p not in named else set())
    canonical = set(facility_count)
    base = {f: n / record_count for f, n in facility_count.items()} if record_count else {}
    learned: dict[str, str] = {}
    for phrase, commons in occurrences.items():
        if phrase in canonical or normalize(phrase) in {normalize(c) for c in canonical}:
            continue
        votes: Counter[str] = Counter()
        for common in commons:
            for c in common:
                votes[c] += similarity(phrase, c) * (1 + prior_weight * (1 - base[c]))
        if not votes:
            continue
        best, total = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
        # Records that break the search's constraints can elect a wrong name; when another facility is clearly
        # closer in characters, the data is not trusted and the phrase is left to the matcher's n-gram step.
        closest = max(similarity(phrase, c) for c in canonical)
        if total / len(commons) >= min_score and closest <= similarity(phrase, best) + margin:
            learned[phrase] = best
    return learned
