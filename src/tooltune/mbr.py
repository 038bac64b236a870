"""Minimum-Bayes-risk choice among a model's own candidate turns (`GenerationConfig.samples`).

Greedy decoding returns the most likely token at each step, which is not the turn a scorer expects to score best:
with several ways to phrase a reply, the safest one is the one that agrees most with the others. Given candidates
for one turn (the greedy one and draws at a temperature), `choose` returns the one with the highest summed agreement
with the other candidates, each taken in turn as the reference:

- two replies agree by the course's character BLEU-4 of the first against the second;
- two calls of the same tool by the slot F1 of the first's arguments against the second's (two empty calls: 1);
- a reply and a call, or calls of different tools, do not agree (0), so the turn type is voted on too.

Nothing outside the candidates enters the choice: no rule, table or gold data, only the model's own outputs.
Ties go to the earlier candidate (the greedy one comes first).
"""

from __future__ import annotations

from collections.abc import Sequence

from tooltune.dialogue import Assistant, Call
from tooltune.evaluate.metrics import char_bleu4, slot_counts


def agreement(candidate: Call | Assistant, reference: Call | Assistant) -> float:
    """How well `candidate` would score if `reference` were the gold turn, in [0, 1]."""
    if isinstance(candidate, Assistant) and isinstance(reference, Assistant):
        return char_bleu4(candidate.content, reference.content)
    if isinstance(candidate, Call) and isinstance(reference, Call) and candidate.name == reference.name:
        if not candidate.arguments and not reference.arguments:
            return 1.0
        return slot_counts(candidate.arguments, reference.arguments).f1
    return 0.0


def choose(candidates: Sequence[Call | Assistant]) -> int:
    """The index of the candidate with the highest summed agreement with the others (the earliest on a tie)."""
    if not candidates:
        raise ValueError("choose needs at least one candidate")
    scores = [sum(agreement(c, r) for j, r in enumerate(candidates) if j != i) for i, c in enumerate(candidates)]
    return max(range(len(candidates)), key=lambda i: (scores[i], -i))
