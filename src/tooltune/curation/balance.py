"""Rebalancing a dialogue set by category (lecture 12.4): downsample, upsample or augment toward a target size.

Each dialogue gets ONE category under a grouping (`BY`):
- `slot-keys`: the sorted set of argument keys its calls use (`facilities+type`), `-` for none; the build's stratum.
- `turn-type`: `single`/`multi` search, plus `+free` when it has an assistant reply that does not follow a result
  (a question answered from earlier records, a closing): the reply kinds the lecture says models under-learn.
- `facility`: its rarest facility value (rarest in the input set), `-` when its calls name none.

The target size of a category is the mean category size n / C, rounded (or a number given). `downsample` keeps a seeded random
`target` of every larger category; `upsample` adds seeded random copies to every smaller one until it reaches
`target`; `augment` adds the same number but each added copy is changed by the build's augmentations (a facility
paraphrase, else a question about a returned hotel, else a closing exchange); a copy none of them applies to stays a
plain copy and is counted as such. Nothing is dropped silently: `Balanced.counts` says what was removed or added.

Loss weights (the same categories, for training instead of resampling): `loss_weights(dialogues, by)` gives each
dialogue w_i = n / (C * n_c(i)) (n dialogues, C categories, n_c the size of i's category), so every category carries
the same total weight n / C and the weights average to 1 (the loss scale is unchanged). See `tooltune.train.data`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tooltune.dataset.augment import add_closing, add_paraphrase, add_qa, paraphrase_table
from tooltune.dataset.items import Item
from tooltune.dialogue import Assistant, Dialogue, Result

BY = ("slot-keys", "turn-type", "facility")
STRATEGIES = ("downsample", "upsample", "augment")


def slot_keys_category(d: Dialogue) -> str:
    return "+".join(sorted({k for c in d.calls for k in c.arguments})) or "-"


def turn_type_category(d: Dialogue) -> str:
    free = any(isinstance(t, Assistant) and not (i and isinstance(d.turns[i - 1], Result))
               for i, t in enumerate(d.turns))
    return ("multi" if len(d.calls) > 1 else "single") + ("+free" if free else "")


def _facilities(d: Dialogue) -> set[str]:
    return {f for c in d.calls for f in c.arguments.get("facilities") or [] if isinstance(f, str)}


def categoriser(by: str, dialogues: Sequence[Dialogue]) -> Callable[[Dialogue], str]:
    """dialogue -> its category under `by` (the facility grouping needs the whole set to know which is rarest)."""
    if by == "slot-keys":
        return slot_keys_category
    if by == "turn-type":
        return turn_type_category
    if by == "facility":
        freq = Counter(f for d in dialogues for f in _facilities(d))
        # Rarest first; ties by name, so the category does not depend on set order.
        return lambda d: min(_facilities(d), key=lambda f: (freq[f], f), default="-")
    raise ValueError(f"unknown grouping {by!r}; known: {', '.join(BY)}")


def loss_weights(dialogues: Sequence[Dialogue], by: str) -> list[float]:
    """w_i = n / (C * n_c(i)): each category's weights sum to n / C, all weights average to 1."""
    category = categoriser(by, dialogues)
    cats = [category(d) for d in dialogues]
    sizes = Counter(cats)
    return [len(dialogues) / (len(sizes) * sizes[c]) for c in cats]


@dataclass
class Balanced:
    dialogues: list[Dialogue]
    before: Counter
    """Dialogues per category in the input."""
    after: Counter
    """Dialogues per category in the output."""
    target: int
    counts: Counter = field(default_factory=Counter)
    """`removed`, `copied` (plain copies), and per augmentation the copies it changed (`augmented: qa`)."""


def _augmented_copy(d: Dialogue, rng: random.Random, table, facility_names) -> tuple[Dialogue, str]:
    item = Item(d, "balance", d.id)
    for kind, make in (("paraphrase", lambda: add_paraphrase(item, table, rng)),
                       ("qa", lambda: add_qa(item, facility_names, rng)),
                       ("closing", lambda: add_closing(item, rng))):
        new = make()
        if new is not None:
            return Dialogue(new.dialogue.turns, d.tools, id=f"{d.id}+{kind}"), kind
    return d, ""


def balance(dialogues: Sequence[Dialogue], by: str, strategy: str, seed: int = 0, target: int | None = None,
            facility_names: Sequence[str] = ()) -> Balanced:
    """The rebalanced set: originals keep their input order, added copies follow, in category order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    category = categoriser(by, dialogues)
    members: dict[str, list[int]] = {}
    for i, d in enumerate(dialogues):
        members.setdefault(category(d), []).append(i)
    before = Counter({c: len(m) for c, m in members.items()})
    if target is None:
        target = round(len(dialogues) / len(before)) if before else 0
    rng = random.Random(seed)
    keep, added, counts = set(range(len(dialogues))), [], Counter()
    table = None
    if strategy == "augment":
        table = paraphrase_table({})  # the hand-checked phrase rules; no learning pass over the course data here
        # Facilities the QA augmentation may ask about: those of the returned records (the database's names).
        facility_names = facility_names or sorted({f for d in dialogues for t in d.turns if isinstance(t, Result)
                                                   for r in t.records for f in r.get("facilities") or []})
    for cat in sorted(members):
        idx = members[cat]
        if strategy == "downsample" and len(idx) > target:
            dropped = set(idx) - set(rng.sample(idx, target))
            keep -= dropped
            counts["removed"] += len(dropped)
        elif strategy != "downsample" and len(idx) < target:
            for i in (rng.choice(idx) for _ in range(target - len(idx))):
                d = dialogues[i]
                kind = ""
                if strategy == "augment":
                    d, kind = _augmented_copy(d, rng, table, list(facility_names))
                counts[f"augmented: {kind}" if kind else "copied"] += 1
                added.append((d, cat))
    out = [d for i, d in enumerate(dialogues) if i in keep] + [d for d, _ in added]
    # An added copy counts in its source's category (a paraphrase changes the facility's words, not what it asks).
    after = Counter(category(dialogues[i]) for i in keep) + Counter(cat for _, cat in added)
    return Balanced(out, before, after, target, counts)


def balance_table(result: Balanced) -> str:
    """Markdown: dialogues per category before and after, with shares."""
    total_b, total_a = sum(result.before.values()) or 1, sum(result.after.values()) or 1
    lines = [f"target per category: {result.target}", "",
             "| category | before | share | after | share |", "| --- | ---: | ---: | ---: | ---: |"]
    for cat in sorted(result.before, key=lambda c: (-result.before[c], c)):
        b, a = result.before[cat], result.after[cat]
        lines.append(f"| {cat} | {b} | {100 * b / total_b:.1f}% | {a} | {100 * a / total_a:.1f}% |")
    lines.append(f"| total | {total_b} | | {total_a} | |")
    if result.counts:
        lines += ["", "changes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))]
    return "\n".join(lines) + "\n"
