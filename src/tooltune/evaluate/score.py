"""Scoring a list of prediction rows: the course's four numbers, and the views beyond them.

`score(rows)` returns one JSON-ready dict. Course metrics (x100, see `metrics.py`): `bleu4`, `slot_p`, `slot_r`,
`slot_f1`, with `n_calls` / `n_replies` (the gold turns they average over). Beyond the course, same dict:
`slot_by_key` (P/R/F1 per argument key), `turn_types` (gold call/reply against predicted call/reply/unparsable),
`valid_calls` (predicted calls that parse and pass the tool schema), `rouge_jieba` (ROUGE-1/2/L F on jieba words
over the replies, as LLaMA-Factory reports it) and, when a `search` callable is given, `task_success` (the predicted
call finds the same hotels as the gold call).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from tooltune.db import HotelDB
from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Tool
from tooltune.errors import InputError, ToolTuneError
from tooltune.evaluate.metrics import ROUGE_KEYS, SlotCounts, char_bleu4, quiet_jieba, rouge_words, slot_counts_by_key
from tooltune.evaluate.predictions import Row
from tooltune.schema import argument_problems

Search = Callable[[Mapping[str, Any], int], Sequence[Any]]
"""`search(arguments, limit) -> records`: the hotels a call finds (dicts with `hotel_id`, or objects with one)."""

COURSE_KEYS = ("bleu4", "slot_p", "slot_r", "slot_f1")


def _pct(x: float) -> float:
    return 100.0 * x


def _kind(turn: Any) -> str:
    return "call" if isinstance(turn, Call) else "reply" if isinstance(turn, Assistant) else "unparsable"


def reply_bleu(row: Row) -> float:
    """BLEU-4 of one reply row in [0, 1]; a call or an unparsable output where a reply was due scores 0."""
    assert isinstance(row.gold, Assistant)
    return char_bleu4(row.pred.content, row.gold.content) if isinstance(row.pred, Assistant) else 0.0


def call_slots(row: Row) -> dict[str, SlotCounts]:
    """Slot counts per key of one call row; a reply or an unparsable output where a call was due counts as `{}`."""
    assert isinstance(row.gold, Call)
    return slot_counts_by_key(row.pred.arguments if isinstance(row.pred, Call) else None, row.gold.arguments)


def course_metrics(rows: Sequence[Row]) -> dict[str, Any]:
    """The reference table's numbers: mean reply BLEU-4 and micro slot P/R/F1, x100; 0 where nothing to average."""
    replies = [r for r in rows if isinstance(r.gold, Assistant)]
    calls = [r for r in rows if isinstance(r.gold, Call)]
    bleu = [reply_bleu(r) for r in replies]
    slots = sum((c for r in calls for c in call_slots(r).values()), SlotCounts())
    return {"bleu4": _pct(sum(bleu) / len(bleu)) if bleu else 0.0,
            "slot_p": _pct(slots.precision), "slot_r": _pct(slots.recall), "slot_f1": _pct(slots.f1),
            "n_calls": len(calls), "n_replies": len(replies),
            "slots": {"correct": slots.correct, "predicted": slots.predicted, "gold": slots.gold}}


def slot_by_key(rows: Sequence[Row]) -> dict[str, dict[str, float | int]]:
    """Slot P/R/F1 (x100) and counts for each argument key, keys sorted by how many gold slots they hold."""
    totals: dict[str, SlotCounts] = {}
    for row in rows:
        if isinstance(row.gold, Call):
            for key, counts in call_slots(row).items():
                totals[key] = totals.get(key, SlotCounts()) + counts
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1].gold, kv[0]))
    return {key: {"p": _pct(c.precision), "r": _pct(c.recall), "f1": _pct(c.f1),
                  "correct": c.correct, "predicted": c.predicted, "gold": c.gold} for key, c in ordered}


def turn_types(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Confusion of turn types: `table[gold kind][predicted kind]` with kinds call / reply / unparsable."""
    table = {gold: dict.fromkeys(("call", "reply", "unparsable"), 0) for gold in ("call", "reply")}
    for row in rows:
        table[_kind(row.gold)][_kind(row.pred)] += 1
    return table


def call_problems(call: Call, tools: Sequence[Tool]) -> list[str]:
    """Why a predicted call could not run: an unknown tool, or its arguments' schema problems; [] when valid."""
    by_name = {t.name: t for t in tools}
    if call.name not in by_name:
        return [f"unknown tool {call.name!r} (known: {', '.join(by_name)})"]
    return argument_problems(by_name[call.name], call.arguments)


def valid_calls(rows: Sequence[Row], tools: Sequence[Tool] = (HOTEL_TOOL,)) -> dict[str, Any]:
    """Valid-call rate: of the outputs that tried to call (parsed calls plus unparsable outputs, which are almost
    always broken calls since any text parses as a reply), the share that parsed and pass the tool schema."""
    attempts = [r for r in rows if not isinstance(r.pred, Assistant)]
    problems: Counter[str] = Counter()
    valid = 0
    for row in attempts:
        if isinstance(row.pred, Call):
            found = call_problems(row.pred, tools)
            valid += not found
            # "facilities[2]: expected string" -> "facilities": count problems by argument key
            problems.update({p.split(":")[0].split("[")[0] for p in found})
    return {"attempted": len(attempts), "valid": valid,
            "unparsable": sum(r.pred is None for r in attempts),
            "rate": _pct(valid / len(attempts)) if attempts else 0.0,
            "problems_by_key": dict(problems.most_common())}


def _hotel_key(record: Any) -> Any:
    if isinstance(record, Mapping):
        return record.get("hotel_id", record.get("name"))
    return getattr(record, "hotel_id", getattr(record, "name", None))


def _memo_found(search: Search, limit: int) -> Callable[[Mapping[str, Any]], frozenset]:
    """The set of hotels `arguments` find, remembered for one scoring call: a good model's call repeats the gold
    one, and the search is deterministic, so each distinct argument set runs once (errors are not remembered)."""
    seen: dict[str, frozenset] = {}

    def found(arguments: Mapping[str, Any]) -> frozenset:
        key = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=repr)
        if key not in seen:
            seen[key] = frozenset(_hotel_key(r) for r in search(arguments, limit))
        return seen[key]

    return found


def task_success(rows: Sequence[Row], search: Search, limit: int = 3) -> dict[str, Any]:
    """Does the predicted call find the same hotels (as a set, top `limit`) as the gold call?

    A missing or unparsable call fails; so does a call the search rejects (a `ToolTuneError`, counted under
    `pred_rejected`). Gold calls the search itself rejects cannot be judged: they are left out of the rate and
    counted under `gold_rejected`.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        # checked here: a search rejecting every call for its limit would leave nothing judged, silently
        raise InputError(f"the task-success limit must be a positive integer, got {limit!r}", field="limit")
    judged = success = gold_empty = pred_rejected = gold_rejected = 0
    found = _memo_found(search, limit)
    for row in rows:
        if not isinstance(row.gold, Call):
            continue
        try:
            gold_found = found(row.gold.arguments)
        except ToolTuneError:
            gold_rejected += 1
            continue
        judged += 1
        gold_empty += not gold_found
        if not isinstance(row.pred, Call):
            continue
        try:
            success += found(row.pred.arguments) == gold_found
        except ToolTuneError:
            pred_rejected += 1
    return {"limit": limit, "judged": judged, "success": success, "rate": _pct(success / judged) if judged else 0.0,
            "gold_found_nothing": gold_empty, "pred_rejected": pred_rejected, "gold_rejected": gold_rejected}


def hoteldb_search(path: str | None = None, data_dir: str | None = None) -> Search:
    """The local hotel database (`tooltune.db.HotelDB`, built on first use) as a `Search`, for task success."""
    db = HotelDB.open(path, data_dir)
    return lambda arguments, limit: db.search(dict(arguments), limit).records


def rouge_jieba(rows: Sequence[Row]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F (x100) over the reply rows; a wrong turn type scores 0, as BLEU does."""
    replies = [r for r in rows if isinstance(r.gold, Assistant)]
    if not replies:
        return dict.fromkeys(ROUGE_KEYS, 0.0)
    quiet_jieba()
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for row in replies:
        if isinstance(row.pred, Assistant):
            for key, value in rouge_words(row.pred.content, row.gold.content).items():
                totals[key] += value
    return {key: _pct(total / len(replies)) for key, total in totals.items()}


def score(rows: Sequence[Row], *, tools: Sequence[Tool] = (HOTEL_TOOL,), search: Search | None = None,
          limit: int = 3, rouge: bool = True) -> dict[str, Any]:
    """Every metric of a run, JSON-ready (see the module docstring); `task_success` only when `search` is given."""
    result = course_metrics(rows)
    result["slot_by_key"] = slot_by_key(rows)
    result["turn_types"] = turn_types(rows)
    result["valid_calls"] = valid_calls(rows, tools)
    if rouge:
        result["rouge_jieba"] = rouge_jieba(rows)
    if search is not None:
        result["task_success"] = task_success(rows, search, limit)
    return result
