"""The build's balance report: `report.md` (tables) and `balance.png` (matplotlib, Agg, ASCII labels).

Per split: dialogues, calls using each argument key, facility values, turn types, dialogue lengths (turns,
characters of the seed JSON, tokens: a tokenizer's count when one is given, else characters). Plus the sources, the
augmentation counts and every removed or shortened dialogue with its source file and index.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tooltune.dataset.items import Item, Removed
from tooltune.dialogue import Assistant, Call, Result, User, dialogue_to_seed

ARG_KEYS = ("name", "type", "facilities", "price_range_lower", "price_range_upper", "rating_range_lower",
            "rating_range_upper")
TURN_TYPES = ("user", "search", "return", "assistant after return", "assistant reply")


@dataclass
class SplitStats:
    """Counts and lengths of one split."""

    dialogues: int = 0
    slot_keys: Counter = field(default_factory=Counter)
    """Calls using each argument key."""
    facilities: Counter = field(default_factory=Counter)
    """Occurrences of each facility value in call arguments."""
    turn_types: Counter = field(default_factory=Counter)
    searches: Counter = field(default_factory=Counter)
    """Dialogues with a single search vs several."""
    turns: list[int] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def seed_json(item: Item) -> str:
    """The dialogue as one line of the output files (seed format)."""
    return json.dumps(dialogue_to_seed(item.dialogue), ensure_ascii=False)


def split_stats(items: Sequence[Item], count_tokens: Callable[[str], int] | None = None) -> SplitStats:
    s = SplitStats(dialogues=len(items))
    for item in items:
        turns = item.dialogue.turns
        calls = [t for t in turns if isinstance(t, Call)]
        for c in calls:
            s.slot_keys.update(c.arguments.keys())
            s.facilities.update(f for f in c.arguments.get("facilities") or [] if isinstance(f, str))
        for i, t in enumerate(turns):
            if isinstance(t, Assistant):
                s.turn_types["assistant after return" if i and isinstance(turns[i - 1], Result)
                             else "assistant reply"] += 1
            else:
                s.turn_types[{User: "user", Call: "search", Result: "return"}[type(t)]] += 1
        s.searches["multi" if len(calls) > 1 else "single"] += 1
        text = seed_json(item)
        s.turns.append(len(turns))
        s.chars.append(len(text))
        s.tokens.append(count_tokens(text) if count_tokens else len(text))
    return s


def _lengths(values: list[int]) -> str:
    if not values:
        return "- | - | -"
    return f"{statistics.mean(values):.1f} | {statistics.median(values):g} | {max(values)}"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in
                                                               range(len(header))) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(stats: dict[str, SplitStats], sources: dict[str, int], augments: Counter,
                    removed: list[Removed], settings: dict[str, object], token_unit: str) -> str:
    names = list(stats)
    out = ["# Hotel dialogue dataset: build report", "", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in
                                                                                   settings.items()), ""]
    out += ["## Sources", ""] + _table(["source", "dialogues extracted"], [[k, v] for k, v in sources.items()])
    out += ["", "## Augmentation", "", "Dialogues each augmentation touched (new dialogues for named/price_upper)."]
    out += [""] + _table(["augmentation", "dialogues"], [[k, augments[k]] for k in sorted(augments)] or [["-", 0]])
    out += ["", "## Splits", ""] + _table(["split", "dialogues", "single search", "multi search"],
                                          [[n, stats[n].dialogues, stats[n].searches["single"],
                                            stats[n].searches["multi"]] for n in names])
    out += ["", "## Calls using each argument key", ""] + _table(
        ["key"] + names, [[k] + [stats[n].slot_keys[k] for n in names] for k in ARG_KEYS])
    out += ["", "## Turn types", ""] + _table(["turn type"] + names,
                                              [[t] + [stats[n].turn_types[t] for n in names] for t in TURN_TYPES])
    out += ["", "## Dialogue lengths (mean | median | max)", ""] + _table(
        ["split", "turns mean", "median", "max", "chars mean", "median", "max", f"{token_unit} mean", "median", "max"],
        [[n, *_lengths(stats[n].turns).split(" | "), *_lengths(stats[n].chars).split(" | "),
          *_lengths(stats[n].tokens).split(" | ")] for n in names])
    facilities = sum((stats[n].facilities for n in names), Counter())
    out += ["", f"## Facility values ({len(facilities)} distinct; fNN labels the plot)", ""] + _table(
        ["#", "facility"] + names,
        [[f"f{i:02d}", f] + [stats[n].facilities[f] for n in names]
         for i, (f, _) in enumerate(sorted(facilities.items(), key=lambda kv: (-kv[1], kv[0])))])
    reasons = Counter(r.reason for r in removed if not r.kept)
    cut = [r for r in removed if r.kept]
    out += ["", f"## Removed dialogues ({sum(reasons.values())})", ""]
    out += _table(["reason", "dialogues"], [[k, v] for k, v in sorted(reasons.items())] or [["-", 0]])
    out += [""] + _table(["source", "index", "reason", "detail"],
                         [[r.source, r.index, r.reason, r.detail.replace("|", "/")] for r in removed if not r.kept])
    out += ["", f"## Shortened dialogues, kept ({len(cut)})", "",
            "Cut before the first turn that could not be mapped (or after leading turns without a search)."]
    out += [""] + _table(["source", "index", "detail"], [[r.source, r.index, r.detail.replace("|", "/")] for r in cut])
    return "\n".join(out) + "\n"


def plot_balance(stats: dict[str, SplitStats], path: Path) -> None:
    """Three panels: calls per argument key, turn types, top facility values (fNN as in report.md); per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    facilities = sum((stats[n].facilities for n in names), Counter())
    top = [f for f, _ in sorted(facilities.items(), key=lambda kv: (-kv[1], kv[0]))[:20]]
    panels = [("calls per argument key", list(ARG_KEYS), lambda n, k: stats[n].slot_keys[k], list(ARG_KEYS)),
              ("turn types", list(TURN_TYPES), lambda n, k: stats[n].turn_types[k], list(TURN_TYPES)),
              ("top facility values", top, lambda n, k: stats[n].facilities[k], [f"f{i:02d}" for i in range(len(top))])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 11))
    width = 0.8 / max(1, len(names))
    for ax, (title, keys, value, labels) in zip(axes, panels):
        for j, n in enumerate(names):
            total = max(1, stats[n].dialogues)  # per dialogue, so splits of different sizes compare
            ax.bar([i + j * width for i in range(len(keys))], [value(n, k) / total for k in keys], width, label=n)
        ax.set_title(f"{title} (per dialogue)")
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(keys))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.subplots_adjust(hspace=0.6, bottom=0.08, top=0.95)  # fixed margins: tight_layout costs seconds here
    # Fixed metadata: the same data gives the same bytes.
    fig.savefig(path, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
