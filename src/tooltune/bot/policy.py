"""What the bot asks a model for: the next turn of a history. `Policy` is the small interface the session, the
terminal chat and the server depend on; `GeneratorPolicy` is the real one (a `tooltune.inference.Generator`), and
tests may script one.

`load_policy(path)` opens a training run or a saved model through `tooltune.runs`, the one loader that eval shares.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol, Sequence

from tooltune.dialogue import Turn
from tooltune.formats import ParsedTurn

class Policy(Protocol):
    def next_turn(self, history: Sequence[Turn]) -> tuple[ParsedTurn, str]:
        """The model's next turn after `history` (which ends with a user or result turn), and the raw text."""
        ...


class GeneratorPolicy:
    """A `Generator` (greedy decoding over a chat format) as a `Policy`."""

    def __init__(self, generator: Any, name: str = "tooltune"):
        self.generator = generator
        self.name = name
        """The model id the server lists under /v1/models."""

    def next_turn(self, history: Sequence[Turn]) -> tuple[ParsedTurn, str]:
        pred = self.generator.predict([list(history)])[0]
        return pred.parsed, pred.raw


class LockedPolicy:
    """A policy shared by threads: one `next_turn` at a time. A model's generate is not meant for concurrent calls
    on one set of weights and buffers, and on one device they would only compete; the lock queues them instead."""

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name = getattr(inner, "name", "tooltune")
        self._lock = threading.Lock()

    def next_turn(self, history: Sequence[Turn]) -> tuple[ParsedTurn, str]:
        with self._lock:
            return self.inner.next_turn(history)


def load_policy(path: str | Path, fmt: str | None = None, device: str | None = None,
                max_new_tokens: int = 256, constrained: bool = False) -> GeneratorPolicy:
    """A `GeneratorPolicy` for a training run or a saved model (see `tooltune.runs.load_for_inference`).
    `constrained`: call bodies under the tool's schema (`GenerationConfig.constrained`).

    A model whose tokenizer lacks the format's special tokens is refused: its role tokens would be untrained."""
    from tooltune.formats import get_format
    from tooltune.inference import Generator
    from tooltune.runs import load_for_inference

    loaded = load_for_inference(path, format=fmt, add_missing_tokens=False, device=device)
    config = loaded.generation(max_new_tokens=max_new_tokens, batch_size=1, constrained=constrained)
    generator = Generator(loaded.model, loaded.tokenizer, get_format(loaded.format), config=config)
    return GeneratorPolicy(generator, name=Path(path).resolve().name)
