"""`RulesModel`: the no-neural-network baseline that fine-tuned models are compared against.

predict(history) -> Call | Assistant, in three steps:
1. turn type: after a `return` always a reply and after the opening user turn always a call (train has no exception
   to either); after a later user turn, the vote of the k nearest train user sentences (TF-IDF over character
   n-grams) on "call or reply";
2. a call: the constraints the last user sentence states (regexes, facility and name tables learned from train)
   laid over the previous call's (`tooltune.baseline.calls`);
3. a reply: train replies from similar situations (same turn before, same number of records, same "the records miss
   what was asked" flag), ranked by the similarity of the last user sentence, refilled from the current records, and
   the one the other candidates agree with most (`bleu.consensus`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tooltune.baseline.bleu import consensus
from tooltune.baseline.calls import CarryConfig, merge, sentence_slots
from tooltune.baseline.lexicon import Lexicon, NameFinder, last_call, last_user
from tooltune.baseline.replies import Template, delexicalise, recent_results
from tooltune.baseline.retrieval import TfIdfIndex
from tooltune.baseline.units import split_units
from tooltune.dialogue import Assistant, Call, Result, Turn, User
from tooltune.errors import InputError
from tooltune.evaluate.units import Unit
from tooltune.hotels import load_hotels
from tooltune.paths import HOTEL_DB_JSON, data_file


@dataclass(frozen=True)
class RulesConfig:
    """Settings of `RulesModel`; the defaults are the ones chosen on dev (see bench/results/rules.md)."""

    neighbours: int = 9
    """k of the call-or-reply vote (dev: 9 and 15 tie at 6 errors in 331 turns after a user turn)."""
    candidates: int = 10
    """How many refilled train replies the consensus chooses among."""
    evidence: int = 10
    """How many refilled train replies (the candidates first) the consensus measures each candidate against."""
    same_count_bonus: float = 1.0
    """Similarity added to a train reply that answered the same number of records."""
    same_fit_bonus: float = 0.1
    """Similarity added to a train reply whose records fitted (or missed) the request as the current ones do."""
    same_name_bonus: float = 1.0
    """Similarity added to a train reply that answered the same kind of search (by hotel name or by constraints)."""
    temperature: float = 0.0
    """Consensus weight of a candidate = exp(score / temperature); 0: the score itself."""
    carry: CarryConfig = field(default_factory=CarryConfig)
    """How a call inherits the previous call's arguments."""

    def __post_init__(self) -> None:
        for name in ("neighbours", "candidates", "evidence"):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.temperature < 0:
            raise InputError(f"must be 0 or more, got {self.temperature}", field="temperature")


@dataclass(frozen=True)
class Situation:
    """What a reply depends on besides the wording: the features the retrieval matches."""

    after_result: bool
    count: int
    """Records in the latest return, capped at 3 (-1 when the reply answers a user turn)."""
    fits: bool
    """Every record of the latest return meets the numeric and type constraints of the call before it."""
    by_name: bool
    """The latest call searched by hotel name."""


def situation(history: tuple[Turn, ...]) -> Situation:
    after = isinstance(history[-1], Result)
    call = last_call(history)
    args = call.arguments if call else {}
    records = history[-1].records if after else []
    return Situation(after, min(len(records), 3) if after else -1, all(_fits(r, args) for r in records),
                     "name" in args)


def _fits(record: dict[str, Any], args: dict[str, Any]) -> bool:
    if "type" in args and record.get("type") != args["type"]:
        return False
    for key, value in (("price", record.get("price")), ("rating", record.get("rating"))):
        lower, upper = args.get(f"{key}_range_lower"), args.get(f"{key}_range_upper")
        if value is None or (key == "price" and value < 0):
            if lower is not None or upper is not None:
                return False
            continue
        if (lower is not None and value < lower) or (upper is not None and value > upper):
            return False
    return True


class RulesModel:
    """Fit on train units (`fit`), then `predict(history)`; nothing is learned from dev or test."""

    def __init__(self, config: RulesConfig = RulesConfig(), hotels: list[dict[str, Any]] = ()):
        self.config = config
        self.hotel_names = [h["name"] for h in hotels]
        """Names of the hotel database (`tooltune.hotels.load_hotels`): names a user may ask for."""
        self.facility_names = sorted({f for h in hotels for f in h.get("facilities", [])})
        """The database's facility names: what a carried paraphrase becomes."""

    @classmethod
    def trained(cls, data_dir=None, config: RulesConfig = RulesConfig()) -> "RulesModel":
        """The model fitted on the course's train split and hotel database from the data dir (for chat and eval)."""
        hotels = load_hotels(data_file(HOTEL_DB_JSON, data_dir))
        return cls(config, hotels).fit(split_units("train", data_dir))

    def fit(self, units: list[Unit]) -> "RulesModel":
        self.lexicon = Lexicon.learn(units)
        self.lexicon.canonical = self.facility_names
        self.names = NameFinder(self.hotel_names, units)
        after_user = [u for u in units if isinstance(u.history[-1], User)]
        self.turn_index = TfIdfIndex([last_user(u.history) for u in after_user])
        self.turn_is_call = np.array([isinstance(u.gold, Call) for u in after_user])
        replies = [u for u in units if isinstance(u.gold, Assistant)]
        self.templates: list[Template] = [
            delexicalise(u.gold.content, recent_results(u.history), self.lexicon.find_facilities(last_user(u.history)))
            for u in replies]
        self.reply_situations = [situation(u.history) for u in replies]
        self.reply_index = TfIdfIndex([last_user(u.history) for u in replies])
        self.after_result = np.array([s.after_result for s in self.reply_situations])
        return self

    def predict(self, history: tuple[Turn, ...] | list[Turn]) -> Call | Assistant:
        history = tuple(history)
        if not history or not isinstance(history[0], User):
            raise InputError("a history to answer must start with a user turn", field="history")
        if isinstance(history[-1], User) and (len(history) == 1 or self.is_call(last_user(history))):
            # A dialogue's opening request is always searched (train: 1602 of 1602).
            return self.call(history)
        return self.reply(history)

    def is_call(self, text: str) -> bool:
        """The k nearest train user sentences vote, weighted by similarity: call or reply."""
        votes = self.turn_index.nearest(text, self.config.neighbours)
        return sum(s if self.turn_is_call[i] else -s for i, s in votes) > 0

    def call(self, history: tuple[Turn, ...]) -> Call:
        previous, text = last_call(history), last_user(history)
        new = sentence_slots(text, self.lexicon)
        if previous is None:
            # Train searches by name only in a dialogue's first call, and then by the name alone.
            name = self.names.find(text) or self.lexicon.find_name(text, self.hotel_names)
            if not name and not new:
                name = self.names.guess(text)
            if name:
                return Call({"name": name})
        return Call(merge(previous.arguments if previous else None, new, self.lexicon, self.config.carry))

    def reply(self, history: tuple[Turn, ...]) -> Assistant:
        candidates = self.reply_candidates(history)
        # No train reply refills from these records (rare: a question about a hotel no return holds).
        return Assistant(candidates[0][0] if candidates else "好的。")

    def reply_candidates(self, history: tuple[Turn, ...]) -> list[tuple[str, float]]:
        """Refilled train replies for this situation, the consensus choice first, with their retrieval scores."""
        cfg, here = self.config, situation(history)
        sims = self.reply_index.similarities(last_user(history))
        results = recent_results(history)
        mentions = self.lexicon.find_facilities(last_user(history))
        scored = []
        for i in np.flatnonzero(self.after_result == here.after_result):
            other = self.reply_situations[i]
            score = sims[i] + cfg.same_count_bonus * (other.count == here.count) \
                + cfg.same_fit_bonus * (other.fits == here.fits) + cfg.same_name_bonus * (other.by_name == here.by_name)
            scored.append((score, int(i)))
        scored.sort(key=lambda p: -p[0])
        chosen: list[tuple[str, float]] = []
        for score, i in scored:
            text = self.templates[i].fill(results, mentions)
            if text is not None:
                chosen.append((text, score))
            if len(chosen) == max(cfg.candidates, cfg.evidence):
                break
        if not chosen:
            return []
        top = chosen[0][1]
        weights = [math.exp((s - top) / cfg.temperature) if cfg.temperature > 0 else s for _, s in chosen]
        best = consensus([t for t, _ in chosen[:cfg.candidates]], [t for t, _ in chosen[:cfg.evidence]],
                         weights[:cfg.evidence])
        return [chosen[best]] + chosen[:best] + chosen[best + 1:cfg.candidates]
