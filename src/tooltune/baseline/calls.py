"""Build the arguments of a `search_hotels` call: constraints read from the last user sentence, laid over the
constraints of the previous call (the course's calls accumulate: "再找个经济型的" keeps the price asked for before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tooltune.baseline.lexicon import Lexicon
from tooltune.baseline.slots import hotel_type, numeric_slots

KEY_ORDER = ("name", "type", "facilities", "price_range_lower", "price_range_upper", "rating_range_lower",
             "rating_range_upper")


@dataclass(frozen=True)
class CarryConfig:
    carry: bool = True
    """Start from the previous call's arguments (train: 95% of the keys a later call shares with the one before it
    are kept unchanged)."""
    replace_facilities: bool = True
    """New facilities replace the carried ones rather than join them (train: 76 replaced vs 38 joined)."""
    rename_carried: bool = True
    """Give carried paraphrased facilities their database name, as train's later calls do ("无障碍设施" ->
    "残疾人设施"; see `Lexicon.canonical_name`)."""


def sentence_slots(text: str, lexicon: Lexicon) -> dict[str, Any]:
    """The constraints (type, facilities, price and rating bounds) one sentence states, with no carry-over."""
    out: dict[str, Any] = {}
    kind = hotel_type(text)
    if kind:
        out["type"] = kind
    facilities = lexicon.find_facilities(text)
    if facilities:
        out["facilities"] = facilities
    out.update(numeric_slots(text))
    return out


def _drop_crossed_bounds(merged: dict[str, Any], new: dict[str, Any]) -> None:
    """A new bound that passes the carried opposite bound replaces the range ("1000元以上" after 500-600 drops the
    600), as train's calls do."""
    for prefix in ("price_range", "rating_range"):
        lower, upper = merged.get(f"{prefix}_lower"), merged.get(f"{prefix}_upper")
        if lower is None or upper is None or lower <= upper:
            continue
        stale = f"{prefix}_upper" if f"{prefix}_lower" in new else f"{prefix}_lower"
        if stale not in new:
            del merged[stale]


def merge(previous: dict[str, Any] | None, new: dict[str, Any], lexicon: Lexicon,
          config: CarryConfig = CarryConfig()) -> dict[str, Any]:
    """The next call's arguments: `previous` (carried over) updated with `new`, keys in a fixed order."""
    if "name" in new or previous is None or not config.carry:
        merged = dict(new)
    else:
        merged = {k: v for k, v in previous.items() if k != "name"}
        if config.rename_carried and "facilities" in merged:
            merged["facilities"] = list(dict.fromkeys(lexicon.canonical_name(f) for f in merged["facilities"]))
        for key, value in new.items():
            if key == "facilities" and not config.replace_facilities:
                value = list(dict.fromkeys(merged.get(key, []) + value))
            merged[key] = value
        _drop_crossed_bounds(merged, new)
    return {k: merged[k] for k in KEY_ORDER if k in merged}
