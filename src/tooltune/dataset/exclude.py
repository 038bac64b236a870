"""Keeping held-out dialogues out of a build (`data build --exclude FILE`).

The course's dev/test dialogues were made from the same CrossWOZ hotel sub-dialogues as `dialog.json`, then
augmented (paraphrased facilities, added turns), so neither the argument signature nor the whole text matches
them. What survives is the users' sentences: a built dialogue is excluded when one of its user turns, normalised
(`clean.normalise`) and at least `min_chars` long, is a user turn of an excluded file.

Readable files (JSON lines): seed dialogues (a JSON list of turns), the course's `*.chatglm3.jsonl`
(`{"conversations": [...]}`) and `*.llama2.jsonl` turn samples (`{"context": json-string, "response": ...}`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from tooltune import jsonio
from tooltune.dataset.clean import normalise
from tooltune.dataset.items import Item, Removed
from tooltune.dialogue import User
from tooltune.errors import InputError
from tooltune.datafiles.records import read_jsonl


def _user_turns(row: Any, where: str) -> list[str]:
    if isinstance(row, list):
        turns = row
    elif isinstance(row, dict) and isinstance(row.get("conversations"), list):
        turns = row["conversations"]
    elif isinstance(row, dict) and isinstance(row.get("context"), str):
        context = jsonio.loads(row["context"], where, "context")
        response = jsonio.loads(row.get("response") or "{}", where, "response")
        turns = (context if isinstance(context, list) else []) + [response]
    else:
        raise InputError("expected a seed dialogue (list), a chatglm3 row (conversations) or a llama2 sample "
                         "(context/response)", where=where)
    return [t["content"] for t in turns if isinstance(t, dict) and t.get("role") == "user"
            and isinstance(t.get("content"), str)]


def user_texts(paths: Iterable[Path], min_chars: int = 8) -> dict[str, str]:
    """normalised user sentence -> the file:line it was first seen in, over every line of `paths`."""
    texts: dict[str, str] = {}
    for path in paths:
        for where, row in read_jsonl(path):
            for text in _user_turns(row, where):
                key = normalise(text)
                if len(key) >= min_chars:
                    texts.setdefault(key, where)
    return texts


def item_texts(items: Iterable[Item], min_chars: int = 8) -> dict[str, str]:
    """normalised user sentence -> the item it was first seen in (`where`)."""
    texts: dict[str, str] = {}
    for item in items:
        for t in item.dialogue.turns:
            key = normalise(t.content) if isinstance(t, User) else ""
            if len(key) >= min_chars:
                texts.setdefault(key, item.where)
    return texts


def remove_overlap(items: Iterable[Item], texts: dict[str, str], min_chars: int = 8,
                   reason: str = "in an excluded file") -> tuple[list[Item], list[Removed]]:
    """Items sharing no user sentence with `texts`, and the removed ones (detail: where the sentence is)."""
    kept, removed = [], []
    for item in items:
        hit = next((texts[k] for t in item.dialogue.turns if isinstance(t, User)
                    for k in [normalise(t.content)] if len(k) >= min_chars and k in texts), None)
        if hit:
            removed.append(Removed(item.source, item.index, reason, f"a user turn of {hit}"))
        else:
            kept.append(item)
    return kept, removed
