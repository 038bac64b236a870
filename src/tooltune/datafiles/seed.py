"""The seed format (lecture 11.2): a dialogue is a JSON list of turns with roles user/search/return/assistant.

Files: `raw/*.json` (one dialogue per file, written with indent=4), a `.json` list of such lists
(`raw/enhanced_more/*.json`), or JSON Lines with one dialogue a line. It has no tool list: read dialogues get
the course's `search_hotels` tool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tooltune.dialogue import SEED_ROLES, Dialogue, dialogue_from_seed, dialogue_to_seed
from tooltune.datafiles.fields import read_each, record_id

NAME = "seed"
DESCRIPTION = "lecture seed turns: a JSON list of user/search/return/assistant turns per dialogue"
DOCUMENT_IS_RECORD = True


def looks_like(record: Any) -> bool:
    """A dialogue (a list), or the first turn of a `.json` file that holds one dialogue."""
    role = record.get("role") if isinstance(record, dict) else None
    return isinstance(record, list) or (isinstance(role, str) and role in SEED_ROLES)


def parse(value: Any, where: str, counts: Counter) -> Dialogue:
    return dialogue_from_seed(value, where=where, id=record_id(where))


def read(records: Iterable[tuple[str, Any]], report: Any) -> None:
    read_each(records, report, parse)


def write(dialogues: list[Dialogue], counts: Counter) -> Iterator[Any]:
    for dialogue in dialogues:
        yield dialogue_to_seed(dialogue)
