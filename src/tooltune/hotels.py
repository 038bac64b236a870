"""The CrossWOZ hotel database (`crosswoz/hotel_db.json`) as records in the course's English-keyed form.

A record is what the course's `return` turns hold:
`{"name", "type", "address", "subway", "phone", "facilities": [...], "price": float|None, "rating": float, "hotel_id"}`;
`hotel_id` is the hotel's index in `hotel_db.json` (the course's hotel service numbers them the same way).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tooltune import jsonio
from tooltune.errors import InputError

RECORD_KEYS = ("name", "type", "address", "subway", "phone", "facilities", "price", "rating", "hotel_id")
_CROSSWOZ_KEYS = {"名称": "name", "酒店类型": "type", "地址": "address", "地铁": "subway", "电话": "phone",
                  "酒店设施": "facilities", "价格": "price", "评分": "rating"}


def _record(entry: Any, index: int, where: str) -> dict[str, Any]:
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
        raise InputError("expected a [name, {attributes}] pair", where=where, field=f"[{index}]")
    attrs = entry[1]
    missing = [k for k in _CROSSWOZ_KEYS if k not in attrs]
    if missing:
        raise InputError(f"missing attributes {missing}", where=where, field=f"[{index}]")
    rec = {eng: attrs[zh] for zh, eng in _CROSSWOZ_KEYS.items()}
    rec["price"] = None if rec["price"] is None else float(rec["price"])
    rec["rating"] = None if rec["rating"] is None else float(rec["rating"])
    # hotel_db.json has a few whitespace-only facility entries (layout residue); they name nothing, so they go.
    rec["facilities"] = [f.strip() for f in rec["facilities"] or [] if f.strip()]
    rec["hotel_id"] = index
    return rec


@lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    # size and mtime are part of the cache key so that an edited file is read again (the database rebuilds on it).
    raw = jsonio.read_json(path, "the hotel database")
    if not isinstance(raw, list):
        raise InputError("expected a JSON list of hotels", where=path)
    return tuple(_record(entry, i, path) for i, entry in enumerate(raw))


def load_hotels(path: str | Path) -> list[dict[str, Any]]:
    """All hotels of a CrossWOZ `hotel_db.json`, as fresh record dicts (callers may modify them)."""
    st = Path(path).stat()
    return [dict(r, facilities=list(r["facilities"])) for r in _load(str(path), st.st_size, st.st_mtime_ns)]
