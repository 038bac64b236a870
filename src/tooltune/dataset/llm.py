"""Optional rewriting of user turns by any OpenAI-compatible endpoint (off unless `--llm-base-url` is given).

A user turn that starts a search is sent with a fixed instruction; the rewrite is kept only if every argument value
the original text states literally (numbers, type, facilities, name) is still there, so the search stays right.
Failures (network, refusals, dropped values) keep the original text and are counted. Which turns are rewritten is
seeded; the rewrites themselves are only as repeatable as the endpoint (temperature 0 is asked for).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from tooltune.dataset.items import Item
from tooltune.dialogue import Call, User
from tooltune.errors import ToolTuneError

INSTRUCTION = ("把下面这句订酒店的话换一种更口语、更自然的说法，意思不变，保留其中所有的数字、酒店名称、酒店类型和设施名称，"
               "只输出改写后的一句话：\n")


@dataclass(frozen=True)
class LLMConfig:
    """Where and how much to rewrite."""

    base_url: str
    """The endpoint, e.g. http://127.0.0.1:8000/v1 (any OpenAI-compatible chat completions server)."""
    model: str
    """The model name the endpoint expects."""
    p: float = 0.3
    """Probability that a given search-starting user turn is sent for rewriting."""
    api_key: str = "none"
    """Sent as the bearer token; local servers usually ignore it."""
    timeout: float = 30.0
    """Seconds per request."""


def literal_values(text: str, arguments: dict[str, Any]) -> list[str]:
    """The argument values, as strings, that `text` contains literally: they must survive a rewrite."""
    values: list[str] = []
    for v in arguments.values():
        for x in v if isinstance(v, list) else [v]:
            s = str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)
            if s in text:
                values.append(s)
    return values


def make_client(config: LLMConfig) -> Any:
    try:
        from openai import OpenAI
    except ImportError as e:  # pragma: no cover - openai is a declared dependency
        raise ToolTuneError("LLM rewriting needs the `openai` package: pip install openai") from e
    return OpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout, max_retries=0)


def rewrite(client: Any, model: str, text: str) -> str:
    response = client.chat.completions.create(model=model, temperature=0,
                                              messages=[{"role": "user", "content": INSTRUCTION + text}])
    return (response.choices[0].message.content or "").strip()


def rewrite_items(items: Iterable[Item], client: Any, config: LLMConfig, seed: int) -> tuple[list[Item], Counter]:
    """Items with some search-starting user turns rewritten; counts: `llm rewritten`, `llm rejected`, `llm failed`."""
    counts: Counter = Counter()
    out = []
    for item in items:
        rng = random.Random(f"{seed}:llm:{item.where}")
        turns = list(item.dialogue.turns)
        changed = False
        for i in range(len(turns) - 1):
            user, call = turns[i], turns[i + 1]
            if not (isinstance(user, User) and isinstance(call, Call)) or rng.random() >= config.p:
                continue
            try:
                new = rewrite(client, config.model, user.content)
            except Exception as e:  # the endpoint's errors vary by server; each one is counted, none stops the build
                counts["llm failed"] += 1
                counts[f"llm failed: {type(e).__name__}"] += 1
                continue
            if not new or new == user.content or any(v not in new for v in literal_values(user.content,
                                                                                            call.arguments)):
                counts["llm rejected"] += 1
                continue
            turns[i] = User(new)
            counts["llm rewritten"] += 1
            changed = True
        out.append(item.with_turns(turns, "llm") if changed else item)
    return out, counts
