"""The server's generation engine: concurrent requests' turns are decoded together, in batches.

`BatchingPolicy.next_turn` runs in the request's own thread: it renders and tokenizes the prompt there (outside
the model's critical section), checks it against the prompt-token limit, and puts a job on the waiting list. When
the model is free, one waiting thread takes every job waiting that decodes alike (greedy, or the same sampling
settings and no seed; up to `max_batch`) and runs them as one `Generator.generate_rows` batch for all of them, then
hands the model to the next: dynamic batching. A request that arrives while a batch runs waits for the next one (no
continuous batching: a batch ends when its last row does). Each row streams its text through
`TurnOptions.on_partial` as its tokens come.

Why no scheduler thread of its own: the first version had one, and under `tooltune serve` (uvicorn) it decoded the
same turns 3-10x slower than the server's worker threads did (bench/serve_load.py on the tiny model, one client: p50
484 ms against 28 ms for the one-lock server; the cause was not found). A request's thread decoding for the batch
has no such cost.

How many requests may wait is bounded by the server (`tooltune.bot.server`), not here.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from tooltune.bot.policy import Step, TurnOptions
from tooltune.dialogue import Turn
from tooltune.errors import InputError
from tooltune.formats import SampleTooLong
from tooltune.inference import GenerationConfig, Prediction, Request


def check_options(generator: Any, options: TurnOptions) -> int:
    """The turn's token limit; a request asking for more than the server generates is refused, naming the field."""
    limit = generator.config.max_new_tokens
    wanted = options.max_new_tokens if options.max_new_tokens is not None else limit
    if not 0 < wanted <= limit:
        raise InputError(f"must be 1 to {limit}, the server's --max-new-tokens, not {wanted}", field="max_tokens")
    return wanted


def prompt_of(generator: Any, history: Sequence[Turn], options: TurnOptions) -> list[int]:
    """The turn's prompt ids, refused (400, `messages`) when over the generator's prompt-token limit."""
    ids = generator.full_prompt_ids(list(history), system=options.system)
    if len(ids) > generator.max_prompt:
        raise SampleTooLong(f"the prompt is {len(ids)} tokens, over this server's limit of {generator.max_prompt} "
                            f"(--max-prompt-tokens, and the model's positions less --max-new-tokens)",
                            field="messages")
    return ids


def row_of(generator: Any, prompt: list[int], options: TurnOptions) -> Request:
    on_text = None
    if options.on_partial is not None:
        listener, fmt = options.on_partial, generator.fmt

        def on_text(raw: str) -> bool | None:
            seen = fmt.partial(raw)
            return listener(*seen) if seen is not None else None

    return Request(prompt, generator.tools, check_options(generator, options), options.stop, on_text)


def sampling_of(generator: Any, options: TurnOptions) -> GenerationConfig:
    """The generator's settings with the request's temperature, top_p and seed (its checks name a bad field)."""
    if options.temperature == 0:
        return dataclasses.replace(generator.config, temperature=0.0, samples=1)
    return dataclasses.replace(generator.config, temperature=options.temperature, top_p=options.top_p,
                               seed=options.seed, samples=1)


def step_of(pred: Prediction, row: Request) -> Step:
    return Step(pred.parsed, pred.raw, len(row.prompt), pred.new_tokens, pred.new_tokens >= row.max_new_tokens)


def generate_one(generator: Any, history: Sequence[Turn], options: TurnOptions) -> Step:
    """One turn with a request's options, alone (no scheduler)."""
    row = row_of(generator, prompt_of(generator, history, options), options)
    return step_of(generator.generate_rows([row], sampling_of(generator, options))[0], row)


@dataclass(eq=False)
class _Job:
    row: Request
    sampling: GenerationConfig
    done: bool = False
    step: Step | None = None
    error: BaseException | None = None


class BatchingPolicy:
    """A `Generator` shared by the server's request threads, which decode their turns together (see the module's
    docstring)."""

    thread_safe = True
    """The server calls `next_turn` from many threads at once, without a lock of its own."""

    def __init__(self, generator: Any, name: str = "tooltune", max_batch: int = 8):
        if max_batch < 1:
            raise InputError(f"max_batch must be >= 1, not {max_batch}", field="max_batch")
        self.generator, self.name, self.max_batch = generator, name, max_batch
        self.max_new_tokens = generator.config.max_new_tokens
        self.batches: list[int] = []
        """The size of every batch run so far (what the tests and the load benchmark read)."""
        self._waiting: list[_Job] = []
        self._busy = False
        """Whether a thread is decoding a batch now."""
        self._turn = threading.Condition()

    def next_turn(self, history: Sequence[Turn], options: TurnOptions = TurnOptions()) -> Step:
        prompt = prompt_of(self.generator, history, options)  # in the request's thread, while others decode
        job = _Job(row_of(self.generator, prompt, options), sampling_of(self.generator, options))
        with self._turn:
            self._waiting.append(job)
            while not job.done:
                if self._busy:
                    self._turn.wait()
                    continue
                # The model is free: this thread decodes every job waiting that decodes like the oldest (its own
                # among them, or its turn comes with the next batch).
                self._busy = True
                batch = self._next_batch()
                self._turn.release()
                try:
                    self._decode(batch)
                finally:
                    self._turn.acquire()
                    self._busy = False
                    self._turn.notify_all()
        if job.error is not None:
            raise job.error
        assert job.step is not None
        return job.step

    def close(self) -> None:
        """Nothing to stop: the requests' own threads decode."""

    def _next_batch(self) -> list[_Job]:
        """The jobs waiting that decode like the oldest one, up to max_batch, taken off the waiting list."""
        key = self._waiting[0].sampling
        alike = key.seed is None  # a seeded request runs alone: its tokens must not depend on its neighbours
        batch = [j for j in self._waiting if j.sampling == key and alike][:self.max_batch] or self._waiting[:1]
        self._waiting = [j for j in self._waiting if all(j is not b for b in batch)]
        self.batches.append(len(batch))
        return batch

    def _decode(self, batch: list[_Job]) -> None:
        try:
            preds = self.generator.generate_rows([j.row for j in batch], batch[0].sampling)
            for job, pred in zip(batch, preds):
                job.step = step_of(pred, job.row)
        except Exception as e:  # every request of the batch gets the error; the next batch goes on
            for job in batch:
                job.error = e
        for job in batch:
            job.done = True
