"""Turn units of the course's turn mode: one gold turn to predict plus the gold turns before it.

`{train.reconstructed,dev,test}.llama2.jsonl` hold one unit a line: `{"context": json-string of seed turns,
"response": json-string of the seed turn to predict}`. Raw dicts stop here: each line becomes an evaluation `Unit`
(`tooltune.evaluate.units`) of typed turns; its id names the dialogue in the order this file lists them (the llama2
files do not follow the chatglm3 files' order) and the gold turn's index.
"""

from __future__ import annotations

from pathlib import Path

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, turn_from_seed
from tooltune.errors import InputError
from tooltune.evaluate.units import Unit
from tooltune.datafiles.records import read_jsonl
from tooltune.paths import COURSE_SPLIT, data_file

SPLIT_FILES = {"train": "train.llama2.reconstructed.jsonl", "dev": "dev.llama2.jsonl", "test": "test.llama2.jsonl"}


def _json_field(row: dict, key: str, where: str):
    value = row.get(key)
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a JSON string", where=where, field=key)
    return jsonio.loads(value, where, key)


def read_units(path: str | Path, split: str = "") -> list[Unit]:
    """Every unit of a turn-mode file; a bad line raises `InputError` naming file:line and field."""
    path = Path(path)
    units: list[Unit] = []
    dialogue = -1
    for where, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise InputError("a unit must be a JSON object", where=where)
        context = _json_field(row, "context", where)
        if not isinstance(context, list) or not context:
            raise InputError("'context' must be a non-empty list of turns", where=where, field="context")
        history = tuple(turn_from_seed(t, where, i) for i, t in enumerate(context))
        gold = turn_from_seed(_json_field(row, "response", where), where)
        if not isinstance(gold, (Call, Assistant)):
            raise InputError(f"the turn to predict must be a search or an assistant turn, not {gold.role}",
                             where=where, field="response")
        # The file lists a dialogue's units in order, each context extending the one before: a context that does not
        # starts the next dialogue.
        before = units[-1].history if units else None
        if before is None or not (len(history) > len(before) and history[:len(before)] == before):
            dialogue += 1
        units.append(Unit(f"{split or path.stem}:{dialogue}:{len(history)}", history, gold))
    return units


def split_units(split: str, data_dir: str | Path | None = None) -> list[Unit]:
    """The units of a course split ('train', 'dev' or 'test') from the data dir."""
    if split not in SPLIT_FILES:
        raise InputError(f"unknown split {split!r} (expected one of {', '.join(SPLIT_FILES)})", field="split")
    return read_units(data_file(f"{COURSE_SPLIT}/{SPLIT_FILES[split]}", data_dir), split)
