"""TF-IDF over character n-grams, with cosine nearest neighbours: the one similarity every part of the baseline
(turn-type classifier, reply retrieval) uses. Plain Python dicts: a few thousand short sentences need nothing more.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np


def char_ngrams(text: str, n_max: int = 3) -> Counter:
    """Counts of the character 1..n_max-grams of `text` (padded so that a sentence's start and end count)."""
    padded = f"^{text}$"
    grams: Counter = Counter()
    for n in range(1, n_max + 1):
        for i in range(len(padded) - n + 1):
            grams[padded[i:i + n]] += 1
    return grams


class TfIdfIndex:
    """Cosine similarity of a query sentence to every indexed sentence."""

    def __init__(self, texts: list[str], n_max: int = 3):
        self.n_max = n_max
        counts = [char_ngrams(t, n_max) for t in texts]
        df: Counter = Counter(g for c in counts for g in c)
        self.idf = {g: math.log((1 + len(texts)) / (1 + d)) + 1.0 for g, d in df.items()}
        lists: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, c in enumerate(counts):
            for g, w in self._weigh(c).items():
                lists[g].append((i, w))
        # gram -> (sentence indexes, weights): a query adds each of its grams' postings in one numpy step.
        self.postings = {g: (np.array([i for i, _ in p], dtype=np.int64), np.array([w for _, w in p]))
                         for g, p in lists.items()}
        self.size = len(texts)

    def _weigh(self, counts: Counter) -> dict[str, float]:
        # Sublinear tf, unknown n-grams dropped (they match nothing), unit length.
        vec = {g: (1 + math.log(n)) * self.idf[g] for g, n in counts.items() if g in self.idf}
        norm = math.sqrt(sum(w * w for w in vec.values())) or 1.0
        return {g: w / norm for g, w in vec.items()}

    def similarities(self, text: str) -> np.ndarray:
        """Cosine similarity of `text` to every indexed sentence, shape (size,)."""
        sims = np.zeros(self.size)
        for g, w in self._weigh(char_ngrams(text, self.n_max)).items():
            if g in self.postings:
                idx, weights = self.postings[g]
                sims[idx] += w * weights
        return sims

    def nearest(self, text: str, k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k most similar sentences (index, similarity), best first; `mask` (bool, shape (size,)) filters."""
        sims = self.similarities(text)
        if mask is not None:
            sims = np.where(mask, sims, -1.0)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(int(i), float(sims[i])) for i in order if sims[i] >= 0]
