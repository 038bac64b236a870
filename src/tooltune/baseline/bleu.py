"""A fast character BLEU for choosing among candidate replies (not the reported metric: see `tooltune.evaluate`).

Minimum-Bayes-risk choice: of several plausible replies, say the one the others agree with most; that is the reply
with the highest expected BLEU if one of them were the truth.
"""

from __future__ import annotations

import math
from collections import Counter


def _grams(text: str, n: int) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def char_bleu(reference: str, hypothesis: str) -> float:
    """Sentence BLEU-4 over characters with add-one smoothing of the higher orders (close to nltk's method3)."""
    if not reference or not hypothesis:
        return 0.0
    log_p = 0.0
    for n in range(1, 5):
        hyp, ref = _grams(hypothesis, n), _grams(reference, n)
        total = sum(hyp.values())
        if total == 0:
            return 0.0
        match = sum(min(c, ref[g]) for g, c in hyp.items())
        log_p += math.log((match + (n > 1)) / (total + (n > 1)) if match or n > 1 else 1e-9) / 4
    brevity = min(0.0, 1 - len(reference) / len(hypothesis))
    return math.exp(log_p + brevity)


def consensus(candidates: list[str], evidence: list[str], weights: list[float]) -> int:
    """Index of the candidate with the highest weighted BLEU against the evidence (ties: the earliest).

    `evidence` (with `weights`) stands for the replies that could be true; a candidate is not compared to itself
    (the first `len(candidates)` evidence entries may be the candidates themselves).
    """
    if len(candidates) <= 1:
        return 0
    best, best_score = 0, -1.0
    for i, hyp in enumerate(candidates):
        score = sum(w * char_bleu(ref, hyp) for j, (ref, w) in enumerate(zip(evidence, weights)) if j != i)
        if score > best_score + 1e-12:
            best, best_score = i, score
    return best
