"""What the bot asks a model for: the next turn of a history. `Policy` is the small interface the session, the
terminal chat and the server depend on; `GeneratorPolicy` is the real one (a `tooltune.inference.Generator`), and
tests may script one.

`load_policy(path)` opens a training run or a saved model through `tooltune.runs`, the one loader that eval shares.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

from tooltune.datafiles import read_dialogues
from tooltune.dialogue import MAX_NEW_TOKENS, Turn
from tooltune.formats import ParsedTurn, get_format
from tooltune.inference import Generator
from tooltune.inference import domain_vocab as vocab_of
from tooltune.runs import default_device, load_for_inference, training_data


@dataclass(frozen=True)
class TurnOptions:
    """What a client asks of each model turn of its request (an API request's fields); the defaults are the
    server's own settings."""

    system: str = ""
    """A system message's text, rendered as the chat format defines (`ChatFormat.system_prompt`)."""
    max_new_tokens: int | None = None
    """Tokens per turn at most (`max_tokens`); None: the generator's `max_new_tokens`."""
    stop: tuple[str, ...] = ()
    """Strings that end a turn (cut from its text)."""
    temperature: float = 0.0
    """0: greedy decoding; above 0: drawn (`tooltune.inference.GenerationConfig.temperature`)."""
    top_p: float = 1.0
    seed: int | None = None
    on_partial: Callable[[str, str], bool | None] | None = None
    """Streaming: called as the turn is generated with what it already is (`ChatFormat.partial`: ("reply", text so
    far) or ("call", arguments so far)); returning False stops the turn (the client went away)."""


class Step(NamedTuple):
    """One model turn a policy wrote: the turn read back, the raw text, and what it cost in tokens."""

    parsed: ParsedTurn
    raw: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    hit_limit: bool = False
    """The turn ended at its token limit, not at an end token (OpenAI's finish_reason "length")."""


class Policy(Protocol):
    def next_turn(self, history: Sequence[Turn], options: TurnOptions = TurnOptions()) -> Step:
        """The model's next turn after `history` (which ends with a user or result turn)."""
        ...


class GeneratorPolicy:
    """A `Generator` as a `Policy`, one turn at a time (the terminal chat; the server batches through
    `tooltune.bot.engine.BatchingPolicy`)."""

    def __init__(self, generator: Any, name: str = "tooltune"):
        self.generator = generator
        self.name = name
        """The model id the server lists under /v1/models."""

    def next_turn(self, history: Sequence[Turn], options: TurnOptions = TurnOptions()) -> Step:
        if options == TurnOptions():
            pred = self.generator.predict([list(history)])[0]
            return Step(pred.parsed, pred.raw, new_tokens=pred.new_tokens)
        from tooltune.bot.engine import generate_one  # here, not at the top: the engine imports this module's Step

        return generate_one(self.generator, history, options)


class LockedPolicy:
    """A policy shared by threads: one `next_turn` at a time. A model's generate is not meant for concurrent calls
    on one set of weights and buffers, and on one device they would only compete; the lock queues them instead."""

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name = getattr(inner, "name", "tooltune")
        self._lock = threading.Lock()

    def next_turn(self, history: Sequence[Turn], options: TurnOptions = TurnOptions()) -> Step:
        with self._lock:
            return self.inner.next_turn(history, options)


def load_policy(path: str | Path, fmt: str | None = None, device: str | None = None,
                max_new_tokens: int = MAX_NEW_TOKENS, constrained: bool = False, dtype: str | None = None,
                max_prompt_tokens: int = 2048, domain_vocab: bool = False) -> GeneratorPolicy:
    """A `GeneratorPolicy` for a training run or a saved model (see `tooltune.runs.load_for_inference`).
    `constrained`: call bodies under the tool's schema (`GenerationConfig.constrained`). `dtype` None: float32 on
    a CPU, else as `auto` decides. An adapter is merged into the weights when its method allows (LoRA, DoRA, AdaLoRA):
    the same function, without the adapter's extra products at every step.

    Why float32 on a CPU, even where bf16 is native: the bot decodes one token at a time, so its products are a
    vector times a matrix, and on the 2 AVX512-BF16 cores this was measured on such a product of Gemma-3-270M's
    shapes (640 x 2048) took 12 ms in bf16 and 0.17 ms in float32 (bf16 wins in training, where the products are
    large; `bench/results/bot.md`).

    `domain_vocab`: the model writes only tokens of its training data or of the prompt (`eval --domain-vocab`,
    `GenerationConfig.output_vocab`): Gemma's 262,144-row output layer was most of a decoding step here.

    A model whose tokenizer lacks the format's special tokens is refused: its role tokens would be untrained."""
    train_file = training_data(path) if domain_vocab else None  # before the slow loading: a missing file is quick

    if dtype is None:
        dtype = "float32" if (device or default_device()) == "cpu" else "auto"
    loaded = load_for_inference(path, format=fmt, add_missing_tokens=False, device=device, dtype=dtype)
    model = loaded.model
    try:
        model = model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError):  # a plain model, or a method that cannot merge
        pass
    vocab = None
    if train_file is not None:
        vocab = vocab_of(read_dialogues(train_file), loaded.tokenizer, get_format(loaded.format), loaded.observation,
                         loaded.argument_order)
    config = loaded.generation(max_new_tokens=max_new_tokens, batch_size=1, constrained=constrained,
                               max_prompt_tokens=max_prompt_tokens, output_vocab=vocab)
    generator = Generator(model, loaded.tokenizer, get_format(loaded.format), config=config)
    return GeneratorPolicy(generator, name=Path(path).resolve().name)
