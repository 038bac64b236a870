"""What the bot asks a model for: the next turn of a history. `Policy` is the small interface the session, the
terminal chat and the server depend on; `GeneratorPolicy` is the real one (a `tooltune.inference.Generator`), and
tests may script one.

`load_policy(path)` opens a saved model directory. It is kept thin on purpose: the run-directory layout belongs to
training, so only this function needs to change when it does.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol, Sequence

from tooltune.dialogue import Turn
from tooltune.errors import InputError
from tooltune.formats import ParsedTurn

RUN_FILE = "tooltune_run.json"
"""A run directory's description: {"format": ..., "model": <model dir, relative>, "observation": ...}.
Optional: a plain Hugging Face model directory works too when the format is given."""


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


def read_run(path: str | Path, fmt: str | None = None) -> tuple[Path, str, str]:
    """(model directory, format name, observation) of a run or model directory; `fmt` overrides the run's."""
    root = Path(path)
    if not root.is_dir():
        raise InputError("not a directory (expected a training run or a saved model)", where=str(root))
    info: dict[str, Any] = {}
    run_file = root / RUN_FILE
    if run_file.is_file():
        try:
            info = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e}", where=str(run_file)) from None
        if not isinstance(info, dict):
            raise InputError("must be a JSON object", where=str(run_file))
    model_dir = root / str(info.get("model", "."))
    name = fmt or info.get("format")
    if not name:
        raise InputError(f"no chat format: give --format or write {RUN_FILE} with a 'format'", where=str(root))
    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise InputError("no config.json or adapter_config.json: not a saved model", where=str(model_dir))
    return model_dir, name, str(info.get("observation", "full"))


def load_policy(path: str | Path, fmt: str | None = None, device: str | None = None,
                max_new_tokens: int = 256, constrained: bool = False) -> GeneratorPolicy:
    """A `GeneratorPolicy` for the model saved at `path` (a full model, or a PEFT adapter over its base)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tooltune.formats import get_format
    from tooltune.inference import GenerationConfig, Generator

    from tooltune.formats.base import single_id

    model_dir, name, observation = read_run(path, fmt)
    chat_format = get_format(name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    missing = [t for t in chat_format.special_tokens if single_id(tokenizer, t) is None]
    if missing:  # found now, not at the first user turn: a run trained on this format saved them
        raise InputError(f"the tokenizer lacks the {name} format's special tokens {', '.join(missing)}: was the "
                         f"model trained with this format?", where=str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        model = AutoPeftModelForCausalLM.from_pretrained(model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=1, observation=observation,
                              constrained=constrained)
    return GeneratorPolicy(Generator(model, tokenizer, chat_format, config=config), name=Path(path).resolve().name)
