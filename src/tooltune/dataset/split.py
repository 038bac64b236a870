"""Seeded, stratified splitting (8:1:1 for the build; k equal parts for k-fold).

`stratified_split` sorts the items by stratum (each stratum shuffled with `random.Random(seed)`), then deals them
out in that order, each item going to the part furthest behind its target share. So every part gets its share of
the whole within one item, and of each stratum within about one item too, even where a stratum is smaller than
the number of parts (small strata fill the parts in turn instead of all landing in the first).
"""

from __future__ import annotations

import random
from typing import Callable, Hashable, Sequence, TypeVar

from tooltune.dataset.items import Item
from tooltune.dialogue import Call

T = TypeVar("T")


def stratified_split(items: Sequence[T], key: Callable[[T], Hashable], ratios: Sequence[float],
                     seed: int) -> list[list[T]]:
    """`items` dealt into `len(ratios)` disjoint parts of about `ratios` shares, stratified by `key`.

    Deterministic for a given seed and input order; every item lands in exactly one part; within a part, items keep
    their input order. Strata are ordered by `repr(key)`, so keys need a stable repr (str, tuples of str, ...).
    """
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {list(ratios)}")
    total = float(sum(ratios))
    shares = [r / total for r in ratios]
    rng = random.Random(seed)
    strata: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        strata.setdefault(key(item), []).append(i)
    order: list[int] = []
    for k in sorted(strata, key=repr):
        members = strata[k]
        rng.shuffle(members)
        order += members
    counts = [0] * len(ratios)
    assigned: list[list[int]] = [[] for _ in ratios]
    for dealt, i in enumerate(order, start=1):
        # The part whose count lags its target (share * items dealt so far) the most; ties go to the first part.
        part = max(range(len(ratios)), key=lambda j: (shares[j] * dealt - counts[j], -j))
        counts[part] += 1
        assigned[part].append(i)
    return [[items[i] for i in sorted(part)] for part in assigned]


def kfold(items: Sequence[T], key: Callable[[T], Hashable], k: int, seed: int) -> list[tuple[list[T], list[T]]]:
    """k (train, held-out) pairs whose held-out parts are the stratified parts of `items`."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    parts = stratified_split(items, key, [1.0] * k, seed)
    return [([x for j, p in enumerate(parts) if j != i for x in p], parts[i]) for i in range(k)]


def stratum(item: Item) -> tuple[str, str]:
    """The build's stratum: the set of argument keys the dialogue's calls use, and single vs multi search."""
    calls = [t for t in item.dialogue.turns if isinstance(t, Call)]
    keys = "+".join(sorted({k for c in calls for k in c.arguments})) or "-"
    return keys, "multi" if len(calls) > 1 else "single"
