"""`predictions.jsonl`: one row per gold turn, the file between `eval` and `report`.

Each line is exactly `{"id": str, "gold": TURN, "pred": TURN or null, "raw": str}` where TURN is a seed turn
(`{"role": "search", "arguments": {...}}` or `{"role": "assistant", "content": "..."}`), `raw` the text the model
generated and `pred` what it was parsed into (null when it could not be parsed into either turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

from tooltune.dialogue import Assistant, Call, turn_from_seed, turn_to_seed
from tooltune.errors import InputError
from tooltune.datafiles.records import read_jsonl
from tooltune.jsonio import atomic_write_text, dumps, read_text

Target = Union[Call, Assistant]
"""A turn a model is asked to produce."""

PREDICTIONS_FILE = "predictions.jsonl"
ROW_KEYS = ("id", "gold", "pred", "raw")


@dataclass(frozen=True)
class Row:
    """One scored unit: the gold turn, the model's parsed prediction and its raw text."""

    id: str
    """Stable unit id, `split:dialogue:turn` (see `tooltune.evaluate.units.unit_id`)."""
    gold: Target
    pred: Target | None
    """None when the generated text could be parsed into neither a call nor a reply."""
    raw: str
    """The generated text, as the model wrote it."""


def row_to_json(row: Row) -> dict[str, Any]:
    return {"id": row.id, "gold": turn_to_seed(row.gold),
            "pred": None if row.pred is None else turn_to_seed(row.pred), "raw": row.raw}


def _target(value: Any, where: str, field: str) -> Target:
    """Parse the `gold` or `pred` turn of a row; errors name the row's field (`gold.role`, `pred.arguments`)."""
    try:
        turn = turn_from_seed(value, where=where)
    except InputError as e:
        inner = (e.field or "").removeprefix("turn")
        raise InputError(e.message, where=where, field=field + inner) from None
    if not isinstance(turn, (Call, Assistant)):
        raise InputError(f"must be a search or assistant turn, not {turn_to_seed(turn)['role']!r}", where=where,
                         field=f"{field}.role")
    return turn


def row_from_json(obj: Any, where: str) -> Row:
    """Parse one row; errors name `where` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise InputError(f"a row must be a JSON object, got {type(obj).__name__}", where=where)
    missing = [k for k in ROW_KEYS if k not in obj]
    extra = [k for k in obj if k not in ROW_KEYS]
    if missing or extra:
        raise InputError(f"a row has exactly the keys {', '.join(ROW_KEYS)}; missing {missing}, unknown {extra}",
                         where=where)
    for key in ("id", "raw"):
        if not isinstance(obj[key], str):
            raise InputError(f"must be a string, got {type(obj[key]).__name__}", where=where, field=key)
    gold = _target(obj["gold"], where, "gold")
    pred = None if obj["pred"] is None else _target(obj["pred"], where, "pred")
    return Row(obj["id"], gold, pred, obj["raw"])


def read_predictions(path: str | Path) -> list[Row]:
    """Every row of a predictions file, in order; bad JSON, bad rows, repeated ids raise `InputError` at file:line."""
    path = Path(path)
    text = read_text(path, "predictions")
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for where, obj in read_jsonl(path, text):
        row = row_from_json(obj, where)
        if row.id in first_line:
            raise InputError(f"id {row.id!r} already used on line {first_line[row.id]}", where=where, field="id")
        first_line[row.id] = int(where.rsplit(":", 1)[1])
        rows.append(row)
    if not rows:
        raise InputError("no predictions in the file", where=str(path))
    return rows


def write_predictions(path: str | Path, rows: Iterable[Row]) -> int:
    """Write `rows` as JSON lines (UTF-8, Chinese kept readable), atomically (a temporary file renamed over `path`:
    a reader never sees half a file); returns how many were written."""
    lines = [dumps(row_to_json(row)) + "\n" for row in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)
