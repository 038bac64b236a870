"""Cleaning: invalid turns, arguments outside the schema, exact and near duplicates, leakage between splits.

Every removed dialogue becomes a `Removed` (source, index, reason, detail) that the report lists; the first of a
group of duplicates (in input order) is the one kept, so the result depends only on the input order.

- exact duplicate: same normalised user texts (punctuation, spaces and case dropped) and same argument signature
  (every call's arguments, numbers compared as numbers: 300 == 300.0);
- near duplicate: same argument signature and a character n-gram Jaccard similarity of the joined user texts at or
  over `threshold` (candidates share the argument signature, which keeps the comparison cheap);
- leakage: a dev/test dialogue that is an exact or near duplicate of one in an earlier split (train, then dev).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from tooltune.dataset.items import Item, Removed
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, Result, User
from tooltune.schema import argument_problems


@dataclass(frozen=True)
class CleanConfig:
    """How duplicates are recognised."""

    threshold: float = 0.9
    """Jaccard similarity of user-text character n-grams at or above which two dialogues are near duplicates."""
    ngram: int = 3
    """n of the character n-grams."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"CleanConfig.threshold must be in (0, 1], got {self.threshold}")
        if self.ngram < 1:
            raise ValueError(f"CleanConfig.ngram must be >= 1, got {self.ngram}")


_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    return _NOISE.sub("", text).lower()


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return sorted(_canonical(v) for v in value) if isinstance(value, list) else value
    return float(value)


def args_signature(dialogue: Dialogue) -> str:
    return json.dumps([{k: _canonical(v) for k, v in sorted(c.arguments.items())} for c in dialogue.calls],
                      ensure_ascii=False, sort_keys=True)


def user_text(dialogue: Dialogue) -> str:
    return "\n".join(normalise(t.content) for t in dialogue.turns if isinstance(t, User))


def ngrams(text: str, n: int) -> frozenset[str]:
    return frozenset(text[i:i + n] for i in range(max(1, len(text) - n + 1)))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def problems(item: Item) -> tuple[str, str] | None:
    """(reason, detail) when the dialogue cannot be trained on as it is; None when it is fine."""
    for i, t in enumerate(item.dialogue.turns):
        if isinstance(t, (User, Assistant)) and not t.content.strip():
            return "invalid turns", f"turns[{i}]: empty {t.role} text"
        if isinstance(t, Result) and any(not isinstance(r.get("name"), str) for r in t.records):
            return "invalid turns", f"turns[{i}]: a record without a name"
        if isinstance(t, Call):
            found = argument_problems(HOTEL_TOOL, t.arguments)
            if t.name != HOTEL_TOOL.name:
                found.insert(0, f"unknown tool {t.name!r}")
            if found:
                return "arguments outside the schema", f"turns[{i}]: " + "; ".join(found)
    return None


class DuplicateIndex:
    """Dialogues seen so far, to ask whether a new one repeats one of them (exactly or nearly)."""

    def __init__(self, config: CleanConfig):
        self.config = config
        self.exact: dict[tuple[str, str], Item] = {}
        self.by_args: dict[str, list[tuple[frozenset[str], Item]]] = {}

    def match(self, item: Item) -> tuple[str, str] | None:
        """("exact duplicate" | "near duplicate", detail naming the earlier dialogue) or None."""
        args, text = args_signature(item.dialogue), user_text(item.dialogue)
        if (text, args) in self.exact:
            return "exact duplicate", f"of {self.exact[(text, args)].where}"
        grams = ngrams(text, self.config.ngram)
        for other_grams, other in self.by_args.get(args, []):
            score = jaccard(grams, other_grams)
            if score >= self.config.threshold:
                return "near duplicate", f"of {other.where} (Jaccard {score:.2f})"
        return None

    def add(self, item: Item) -> None:
        args, text = args_signature(item.dialogue), user_text(item.dialogue)
        self.exact.setdefault((text, args), item)
        self.by_args.setdefault(args, []).append((ngrams(text, self.config.ngram), item))


def clean(items: Iterable[Item], config: CleanConfig = CleanConfig()) -> tuple[list[Item], list[Removed]]:
    """Items without invalid ones and duplicates, and the removed ones with their reasons."""
    kept, removed = [], []
    index = DuplicateIndex(config)
    for item in items:
        why = problems(item) or index.match(item)
        if why:
            removed.append(Removed(item.source, item.index, *why))
            continue
        index.add(item)
        kept.append(item)
    return kept, removed


def remove_leakage(splits: dict[str, list[Item]], config: CleanConfig = CleanConfig(),
                   ) -> tuple[dict[str, list[Item]], list[Removed]]:
    """Drop from each split (in the dict's order) what duplicates a dialogue of an earlier split."""
    index = DuplicateIndex(config)
    out, removed = {}, []
    for name, items in splits.items():
        kept = []
        for item in items:
            why = index.match(item)
            if why:
                removed.append(Removed(item.source, item.index, f"leakage into {name}", f"{why[0]} {why[1]}"))
            else:
                kept.append(item)
        for item in kept:
            index.add(item)
        out[name] = kept
    return out, removed
