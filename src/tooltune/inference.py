"""Generating the next model turn from a history: batched decoding with the KV cache (greedy by default), then the
format's parse.

One `Generator` serves evaluation (many histories at once), the terminal chat and the server (one at a time).
A history is a sequence of turns ending where the model speaks next (a user or result turn); the format renders it
into a prompt (`ChatFormat.prompt`), the model continues until the tokenizer's eos, one of the format's end tokens, or
one of its stop strings, and `ChatFormat.parse` reads the continuation back as a call or a reply (never raises).
With `GenerationConfig.constrained`, a call's body is generated under its tool's schema (`tooltune.constrained`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tooltune.continuous import decode, plain_greedy
from tooltune.dialogue import (
    HOTEL_TOOL,
    MAX_NEW_TOKENS,
    Tool,
    Turn,
    User,
    order_arguments,
    with_argument_order,
)
from tooltune.errors import InputError
from tooltune.formats import ChatFormat, ParsedTurn, SampleTooLong, encode
from tooltune.formats.base import single_id, without_partial_stop
from tooltune.jsonio import scrub_surrogates
from tooltune.mbr import choose
from tooltune.models.load import max_positions
from tooltune.prefix import PrefixCaches, PrefixStats, reusable


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = MAX_NEW_TOKENS
    """Upper bound on generated tokens per turn (a call or a reply); the course's replies are far shorter."""
    batch_size: int = 8
    """Histories decoded together (left-padded); sorted by length first so a batch wastes little padding."""
    max_prompt_tokens: int = 2048
    """Longer prompts lose whole segments from the front (the most recent turns are kept); never more than the
    model's positions minus `max_new_tokens`."""
    observation: str = "full"
    """How results are rendered in the prompt; must match what the model was trained with."""
    argument_order: str = "as-written"
    """How earlier calls' arguments are laid out in the prompt (`tooltune.dialogue.order_arguments`); must match
    the training's `data.argument_order`."""
    constrained: bool = False
    """Once the model opens a call, generate its arguments under the tool's schema (`tooltune.constrained`;
    needs the `constrained` extra). Replies are never touched."""
    copy_values: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    """With `constrained`: None, free strings are free; else each free string of a call (no enum) is a span of the
    user's turns so far or, under a key listed here as (key, values), one of those values
    (`tooltune.constrained.Copy`; `()`: spans only)."""
    output_vocab: frozenset[int] | None = None
    """Token ids the model may generate, besides every id of the prompts being answered and the end tokens (see
    `domain_vocab`). The output layer then computes only those rows: with Gemma's 262k-entry vocabulary the head is
    most of a decoding step on a CPU. None: the whole vocabulary."""
    temperature: float = 0.0
    """0: greedy decoding. Above 0: tokens are drawn from the softmax at this temperature (with `top_p`)."""
    top_p: float = 1.0
    """When drawing: only the most likely tokens whose probabilities add up to `top_p` (nucleus sampling)."""
    top_k: int = 0
    """When drawing: only the `top_k` most likely tokens (0: no such cut). Cheaper than `top_p` over a large
    vocabulary (no full sort per step)."""
    samples: int = 1
    """Above 1: the greedy turn plus `samples - 1` turns drawn at `temperature` (which must then be above 0), and the
    answer is the candidate that agrees most with the others (`tooltune.mbr`: minimum Bayes risk)."""
    seed: int | None = None
    """Seeds each batch's draws (the same batch then draws the same turns); None: torch's global generator."""
    reuse_prefix: bool = True
    """`predict`: a prompt that begins a longer one (an earlier turn of the same dialogue) takes its KV cache from
    the longer one's read instead of being read again (`tooltune.prefix`). The same predictions up to floating-point
    rounding (the same values, computed in other shapes); off: every batch reads its own prompts."""
    continuous: bool = True
    """`predict`, greedy without a schema constraint: a row that ends leaves its batch and the next prompt takes its
    place (`tooltune.continuous`), instead of every batch running until its longest row ends. The same predictions
    up to floating-point rounding; off: `generate` decodes fixed batches."""

    def __post_init__(self):
        if self.temperature < 0 or self.temperature != self.temperature:
            raise InputError(f"must be 0 (greedy) or above, not {self.temperature}", field="temperature")
        if not 0 < self.top_p <= 1:
            raise InputError(f"must be above 0 and at most 1, not {self.top_p}", field="top_p")
        if self.top_k < 0:
            raise InputError(f"must be 0 (no cut) or above, not {self.top_k}", field="top_k")
        if self.samples < 1:
            raise InputError(f"must be at least 1, not {self.samples}", field="samples")
        if self.samples > 1 and self.temperature == 0:
            raise InputError("more than one sample needs a temperature above 0 to draw them with",
                             field="temperature")


@dataclass
class Request:
    """One history to continue in `Generator.generate_rows`, with its own limits (a server request's row; an
    evaluation's scored row is `tooltune.evaluate.predictions.Row`)."""

    prompt: list[int]
    tools: tuple[Tool, ...]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    """Extra stop strings (an API request's `stop`): the row ends at the first, which is cut from its text."""
    on_text: Callable[[str], bool | None] | None = None
    """Called after each generated token with the row's text so far (special tokens kept, cut at an end token);
    returning False ends the row there (a client that went away)."""


@dataclass
class Prediction:
    parsed: ParsedTurn
    raw: str
    """The generated text, decoded with special tokens kept, cut at the first end token."""
    new_tokens: int


class Generator:
    """Next-turn generation for one model, tokenizer and chat format: greedy by default, drawn at a temperature,
    or chosen among draws by minimum Bayes risk (`GenerationConfig`)."""

    def __init__(self, model: Any, tokenizer: Any, fmt: ChatFormat, tools: Sequence[Tool] = (HOTEL_TOOL,),
                 config: GenerationConfig = GenerationConfig()):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.fmt = fmt.for_tokenizer(tokenizer)
        self.tools = tuple(tools)
        # End tokens: eos plus each stop string that is one special token (ChatGLM3's <|user|>, <|observation|>);
        # the other stop strings are checked on the decoded text.
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        text_stops = []
        for stop in self.fmt.stop_strings:
            tid = single_id(tokenizer, stop)
            (ids.add(tid) if tid is not None else text_stops.append(stop))
        self.end_ids = sorted(ids)
        self.text_stops = tuple(text_stops)
        self._text_stop_criterion = None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]
        # Padding is never an answer (no training target holds it), so it is never generated; `generate` still
        # pads the rows that finished before the others, and the cut below removes that padding.
        self.suppressed = [] if self.pad_id in self.end_ids else [self.pad_id]
        # A prompt must leave room for the reply within the model's positions (GPT-2: n_positions).
        model_config = getattr(model, "config", None)
        positions = max_positions(model_config)
        self.max_prompt = config.max_prompt_tokens
        self.prompts_cut_inside = 0
        """Prompts whose last segment alone was over the limit, so they were cut mid-segment (counted, not dropped)."""
        if positions:
            self.max_prompt = min(self.max_prompt, positions - config.max_new_tokens)
        self.constraint = None
        if config.copy_values is not None and not config.constrained:
            raise InputError("copying call values (copy_values) works through constrained decoding: set "
                             "constrained too", field="copy_values")
        if config.constrained:  # built now: a missing extra or an unsupported tokenizer fails before any work
            from tooltune.constrained import Constraint
            self.constraint = Constraint(self.fmt, tokenizer, self.end_ids)
        self.unconstrained_calls = 0
        """Calls whose opener came with text the grammar refused, so they were left unconstrained (counted)."""
        self.constraint_seconds = 0.0
        """Time spent constraining (watching for call openers, grammar steps, masks), over all batches."""
        self.replaced_characters = 0
        """Lone surrogates in decoded outputs replaced by U+FFFD (no UTF-8 file can hold them), over all batches."""
        self.prefix_stats = PrefixStats()
        """What prompt prefix reuse did (`GenerationConfig.reuse_prefix`), over all `predict` calls."""

    def prompt_ids(self, history: Sequence[Turn], tools: Sequence[Tool] | None = None) -> list[int]:
        tools = tools or self.tools
        history = order_arguments(history, tools, self.config.argument_order)
        segments = self.fmt.prompt(history, tools, observation=self.config.observation)
        try:
            return encode(segments, self.tokenizer, max_length=self.max_prompt).input_ids
        except SampleTooLong:  # the last segment alone (a long tool result) is over the limit: keep its last tokens
            self.prompts_cut_inside += 1
            return encode(segments, self.tokenizer).input_ids[-self.max_prompt:]

    def predict(self, histories: Sequence[Sequence[Turn]], tools: Sequence[Sequence[Tool]] | None = None,
                progress: bool = False, skip: Collection[int] = (),
                on_batch: Callable[[list[int], list[Prediction]], None] | None = None) -> list[Prediction]:
        """The next model turn for each history (offering `tools[i]`, default the generator's), in the given order.

        Batches are formed over all `histories` (by prompt length); a batch whose indexes are all in `skip` is not
        generated and its entries are None. So a resumed evaluation, skipping what it wrote before, decodes exactly
        the batches (and so gets the outputs) of an uninterrupted one. `on_batch(indexes, predictions)` is called
        after each generated batch (`tooltune eval` writes its rows there)."""
        row_tools = [tuple(tools[i]) if tools else self.tools for i in range(len(histories))]
        prompts = [self.prompt_ids(h, row_tools[i]) for i, h in enumerate(histories)]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Prediction | None] = [None] * len(prompts)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(prompts), desc="generate", unit="turn")
        allowed = None
        if self.config.output_vocab is not None:
            allowed = set(self.config.output_vocab).union(self.end_ids, *prompts) - set(self.suppressed)
        size = self.config.batch_size
        batches = [order[start:start + size] for start in range(0, len(order), size)]
        todo = [batch for batch in batches if not all(i in skip for i in batch)]
        rows = [i for i in order if i not in skip]
        if self._continuous(prompts, rows):
            if bar is not None:
                bar.update(len(prompts) - len(rows))
            shared = self._prefix_caches(prompts, [rows])
            with restricted_head(self.model, allowed, compact=True) as head:
                self._predict_continuous(prompts, rows, shared, head.index, out, bar, on_batch)
            if bar is not None:
                bar.close()
            return out  # type: ignore[return-value]
        shared = self._prefix_caches(prompts, todo)
        with restricted_head(self.model, allowed):
            for batch in batches:
                if not all(i in skip for i in batch):
                    copies = [self._copy(histories[i]) for i in batch]
                    prefix = None if shared is None else (lambda batch=batch: shared.cache(batch))
                    preds = self._generate([prompts[i] for i in batch], [row_tools[i] for i in batch], copies,
                                           prefix)
                    if shared is not None:
                        shared.release(batch)
                    for i, pred in zip(batch, preds):
                        out[i] = pred
                    if on_batch is not None:
                        on_batch(batch, preds)
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out  # type: ignore[return-value]

    def _continuous(self, prompts: list[list[int]], rows: list[int]) -> bool:
        """Whether `predict` decodes with continuous batching: on, greedy, no constraint, several prompts of at least
        two tokens, a model whose cache `tooltune.continuous` can join and which asks `generate` for no processor."""
        config = self.config
        if not config.continuous or config.temperature > 0 or config.samples > 1 or self.constraint is not None:
            return False
        return (len(rows) > 1 and min(len(prompts[i]) for i in rows) >= 2 and reusable(self.model)
                and plain_greedy(self.model))

    def _predict_continuous(self, prompts: list[list[int]], rows: list[int], shared: PrefixCaches | None,
                            index: torch.Tensor | None, out: list[Prediction | None], bar: Any,
                            on_batch: Callable[[list[int], list[Prediction]], None] | None) -> None:
        """`predict`'s greedy decoding of `rows` (in this order) by `tooltune.continuous`: each prediction is
        stored, counted and handed to `on_batch` as its row ends."""
        device = next(self.model.parameters()).device

        def first_cache(batch: list[int]) -> tuple[Any, torch.Tensor]:
            input_ids, mask = self._left_padded([prompts[i] for i in batch])
            if shared is None:
                cache = self._prefill(input_ids[:, :-1].to(device), mask[:, :-1].to(device), 1)
            else:
                cache = shared.cache(batch)
                shared.release(batch)
            return cache, mask[:, :-1]

        def done(i: int, ids: list[int]) -> None:
            out[i] = pred = self._predictions([ids], [prompts[i]])[0]
            if on_batch is not None:
                on_batch([i], [pred])
            if bar is not None:
                bar.update(1)

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                decode(self, prompts, rows, first_cache, done, index)
        finally:
            self.model.train(was_training)

    def _prefix_caches(self, prompts: list[list[int]], batches: list[list[int]]) -> PrefixCaches | None:
        """The shared reads of `predict`'s prompts (`tooltune.prefix`), or None where reuse is off, the model cannot
        take a cache so built, or no prompt begins another (a single history: the plain path, as before)."""
        if not self.config.reuse_prefix or not batches or not reusable(self.model):
            return None
        if min(len(prompts[i]) for batch in batches for i in batch) < 2:  # nothing but the last token to share
            return None
        shared = PrefixCaches(self.model, prompts, batches, self.prefix_stats)
        return shared if shared.shares else None

    def text_stop_criterion(self) -> Any:
        """`generate`'s stop-string criterion for the format's text stops, built once per generator: `stop_strings=`
        builds it at every call, a table over the whole vocabulary (3.2 s for Gemma's 262,144 tokens, measured on
        this project's CPU: most of a bot turn's time, `bench/results/serve_profile.md`). Stateless between calls."""
        if self._text_stop_criterion is None:
            from transformers.generation.stopping_criteria import StopStringCriteria
            self._text_stop_criterion = StopStringCriteria(self.tokenizer, list(self.text_stops))
        return self._text_stop_criterion

    def full_prompt_ids(self, history: Sequence[Turn], tools: Sequence[Tool] | None = None,
                        system: str = "") -> list[int]:
        """The prompt `prompt_ids` renders, with a client's system text (`ChatFormat.system_prompt`) and never cut:
        the server refuses a prompt over `max_prompt` tokens rather than drop the start of the conversation."""
        tools = tools or self.tools
        history = order_arguments(history, tools, self.config.argument_order)
        segments = self.fmt.system_prompt(history, tools, system, observation=self.config.observation)
        return encode(segments, self.tokenizer).input_ids

    @torch.inference_mode()
    def generate_rows(self, rows: Sequence[Request], sampling: GenerationConfig | None = None) -> list[Prediction]:
        """Continue each row's prompt, all in one batch (the server batches concurrent requests so). Each row ends
        at an end token of the format, at its own `max_new_tokens` or at one of its own stop strings, and its
        `on_text` sees its text grow token by token. `sampling` (default the generator's config): its temperature,
        top_p, top_k and seed decide the tokens, as in `predict` (one draw per row; `samples` is not used). Greedy
        rows give what `predict` gives for the same prompts."""
        sampling = sampling or self.config
        width = max(len(r.prompt) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):  # left padding: every prompt ends where generation starts
            input_ids[k, width - len(row.prompt):] = torch.tensor(row.prompt, dtype=torch.long)
            mask[k, width - len(row.prompt):] = 1
        device = next(self.model.parameters()).device
        watch = _RowWatch(self, rows, width)
        kwargs: dict[str, Any] = dict(max_new_tokens=max(r.max_new_tokens for r in rows), use_cache=True,
                                      eos_token_id=self.end_ids, pad_token_id=self.pad_id,
                                      stopping_criteria=[watch])
        drawn = sampling.temperature > 0
        kwargs["do_sample"] = drawn
        if drawn:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        if self.suppressed:
            kwargs["suppress_tokens"] = self.suppressed
        if self.text_stops:
            kwargs["stopping_criteria"].append(self.text_stop_criterion())
        processors = self._logits_processors([r.tools for r in rows], width)
        if processors:
            from transformers import LogitsProcessorList
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        allowed = None
        if self.config.output_vocab is not None:  # as `predict`: the vocabulary, the end tokens, the prompts' ids
            allowed = set(self.config.output_vocab).union(self.end_ids, *(r.prompt for r in rows))
            allowed -= set(self.suppressed)
        was_training = self.model.training
        self.model.eval()
        try:
            seeded = drawn and sampling.seed is not None
            # A seeded batch draws from its own stream and leaves torch's global generator as it was (as `_decode`).
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seeded), \
                    restricted_head(self.model, allowed):
                if seeded:
                    torch.manual_seed(sampling.seed)
                generated = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                                **kwargs)
        finally:
            self.model.train(was_training)
        self.unconstrained_calls += sum(getattr(p, "broken", 0) for p in processors)
        self.constraint_seconds += sum(getattr(p, "seconds", 0.0) for p in processors)
        preds = []
        for k, (row, ids) in enumerate(zip(rows, generated[:, width:].tolist())):
            raw, cut = watch.text(k, ids[:row.max_new_tokens])
            if raw and self.text_stops and ended_at_once(self.tokenizer.decode(row.prompt[-8:]), raw, self.text_stops):
                raw = ""
            preds.append(Prediction(self.fmt.parse(raw), raw, cut))
        return preds

    def _copy(self, history: Sequence[Turn]) -> Any:
        """What a row's free strings are copied from (`GenerationConfig.copy_values`), or None."""
        if self.config.copy_values is None:
            return None
        from tooltune.constrained import Copy
        return Copy(tuple(t.content for t in history if isinstance(t, User)), tuple(self.config.copy_values))

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], tools: Sequence[Sequence[Tool]],
                  copies: Sequence[Any] = (), prefix: Callable[[], Any] | None = None) -> list[Prediction]:
        """One batch: greedy, one draw, or (`samples` > 1) greedy plus draws with the minimum-Bayes-risk choice.
        `prefix()`, when given, returns a fresh cache of the prompts but their last tokens (`PrefixCaches.cache`)."""
        config = self.config
        candidates: list[list[Prediction]] = [[] for _ in prompts]
        if config.temperature == 0 or config.samples > 1:
            for row, pred in enumerate(self._decode(prompts, tools, copies, draws=0, prefix=prefix)):
                candidates[row].append(pred)
        draws = config.samples - 1 if config.samples > 1 else int(config.temperature > 0)
        if draws:
            drawn = self._decode(prompts, tools, copies, draws=draws, prefix=prefix)
            for row in range(len(prompts)):
                candidates[row] += drawn[row * draws:(row + 1) * draws]
        return [c[choose([p.parsed.turn for p in c])] if len(c) > 1 else c[0] for c in candidates]

    def _decode(self, prompts: list[list[int]], tools: Sequence[Sequence[Tool]], copies: Sequence[Any],
                draws: int, prefix: Callable[[], Any] | None = None) -> list[Prediction]:
        """`generate` on one batch: greedy (`draws` = 0), or `draws` turns per prompt drawn at the configured
        temperature and top-p (rows prompt by prompt: prompt 0's draws first). With `prefix`, the prompts but their
        last tokens are not read here: their cache comes from `prefix()`."""
        input_ids, mask = self._left_padded(prompts)
        width = input_ids.shape[1]
        device = next(self.model.parameters()).device
        kwargs: dict[str, Any] = dict(max_new_tokens=self.config.max_new_tokens, do_sample=False, use_cache=True,
                                      eos_token_id=self.end_ids, pad_token_id=self.pad_id)
        per_row = max(draws, 1)
        if prefix is not None and width > 1:
            cache = prefix()
            if draws > 1:  # each prompt's draws continue from copies of its cache
                for layer in cache.layers:
                    layer.batch_repeat_interleave(draws)
            kwargs["past_key_values"] = cache
        elif draws > 1:  # each prompt is read once, and its draws continue from copies of what it left in the cache
            kwargs["past_key_values"] = self._prefill(input_ids[:, :-1].to(device), mask[:, :-1].to(device), draws)
        if draws:
            kwargs.update(do_sample=True, temperature=self.config.temperature, top_p=self.config.top_p,
                          top_k=self.config.top_k)
            if draws > 1:
                input_ids, mask = input_ids.repeat_interleave(draws, 0), mask.repeat_interleave(draws, 0)
            tools = [t for t in tools for _ in range(draws)]  # each prompt's draws in a row
            copies = [c for c in copies for _ in range(draws)]
        if self.suppressed:
            kwargs["suppress_tokens"] = self.suppressed
        if self.text_stops:
            kwargs["stopping_criteria"] = [self.text_stop_criterion()]
        processors = self._logits_processors(tools, width, copies)
        if processors:
            from transformers import LogitsProcessorList
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        was_training = self.model.training
        self.model.eval()
        try:
            seeded = draws and self.config.seed is not None
            # A seeded batch draws from its own stream and leaves torch's global generator as it was.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=bool(seeded)):
                if seeded:
                    torch.manual_seed(self.config.seed)
                generated = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                                **kwargs)
        finally:
            self.model.train(was_training)
        self.unconstrained_calls += sum(getattr(p, "broken", 0) for p in processors)
        self.constraint_seconds += sum(getattr(p, "seconds", 0.0) for p in processors)
        return self._predictions(generated[:, width:].tolist(), [prompts[row // per_row]
                                                                 for row in range(len(generated))])

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), left-padded: every prompt ends where generation starts."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        return input_ids, mask

    def _predictions(self, new: list[list[int]], prompts: list[list[int]]) -> list[Prediction]:
        """The generated rows parsed, each cut where it ended: at an end token, or at the padding `generate` puts
        after a row that met a stop string (`prompts[row]`: the row's prompt, to tell a stop met at once)."""
        ends = set(self.end_ids).union(self.suppressed)
        preds = []
        for ids, prompt in zip(new, prompts):
            cut = next((k for k, t in enumerate(ids) if t in ends), len(ids))
            raw, replaced = scrub_surrogates(self.tokenizer.decode(ids[:cut], skip_special_tokens=False))
            self.replaced_characters += replaced
            if raw and self.text_stops and ended_at_once(self.tokenizer.decode(prompt[-8:]), raw, self.text_stops):
                raw = ""
            preds.append(Prediction(self.fmt.parse(raw), raw, cut))
        return preds

    def _prefill(self, input_ids: torch.Tensor, mask: torch.Tensor, copies: int) -> Any:
        """The KV cache of left-padded prompts (their last token left for `generate`), each row repeated `copies`
        times: a prompt of a thousand tokens is read once, not once per draw. Positions count from each row's first
        real token, as `generate` counts them."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        try:
            cache = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                               use_cache=True).past_key_values
        finally:
            self.model.train(was_training)
        for layer in cache.layers:
            layer.batch_repeat_interleave(copies)
        return cache

    def _logits_processors(self, tools: Sequence[Sequence[Tool]], width: int, copies: Sequence[Any] = ()) -> list[Any]:
        """Processors for one batch (rows' tools, prompt width, what rows copy from): the call constraint when on."""
        if self.constraint is None:
            return []
        return [self.constraint.processor(tools, width, self.end_ids, self.text_stops, copies)]


class _RowWatch:
    """`generate_rows`' stopping criterion: after each step it decodes each running row, ends the rows that reached
    their own token limit or stop string, and hands each row's text to its `on_text` (so a row streams)."""

    def __init__(self, generator: Generator, rows: Sequence[Request], width: int):
        self.generator, self.rows, self.width = generator, rows, width
        self.ends = set(generator.end_ids).union(generator.suppressed)
        self.done = [False] * len(rows)

    def text(self, k: int, ids: list[int]) -> tuple[str, int]:
        """Row k's text from its generated `ids`: cut at an end token (or the padding after a stop string) and at its
        first own stop string; and how many tokens it used."""
        cut = next((j for j, t in enumerate(ids) if t in self.ends), len(ids))
        raw, replaced = scrub_surrogates(self.generator.tokenizer.decode(ids[:cut], skip_special_tokens=False))
        self.generator.replaced_characters += replaced
        stops = self.rows[k].stop
        at = min((i for i in (raw.find(s) for s in stops) if i != -1), default=-1)
        return (raw[:at] if at != -1 else raw), cut

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.width:].tolist()
        for k, (row, ids) in enumerate(zip(self.rows, new)):
            if self.done[k]:
                continue
            ended = any(t in self.ends for t in ids)
            raw, _ = self.text(k, ids)
            hit_stop = any(s in self.generator.tokenizer.decode(ids, skip_special_tokens=False) for s in row.stop)
            keep = None
            if row.on_text is not None and not ended:
                try:  # a trailing U+FFFD may be a character whose bytes are not all written yet: held back
                    keep = row.on_text(without_partial_stop(raw.rstrip("\ufffd"), row.stop))
                except Exception:  # one listener's failure (a closed connection) must not end the batch
                    keep = False
            self.done[k] = ended or hit_stop or len(ids) >= row.max_new_tokens or keep is False
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def ended_at_once(prompt_tail: str, raw: str, stops: Sequence[str]) -> bool:
    """Whether `raw` begins by completing a stop string that the prompt began (llama2's "\\n\\n[Round" after a
    prompt ending in two newlines): the model ended its turn at once, so its answer is empty."""
    return any(prompt_tail.endswith(stop[:k]) and raw.startswith(stop[k:])
               for stop in stops for k in range(1, len(stop)))


def domain_vocab(dialogues: Sequence[Any], tokenizer: Any, fmt: ChatFormat, observation: str = "full",
                 argument_order: str = "as-written") -> frozenset[int]:
    """Every token id of `dialogues` rendered in `fmt` (prompts, calls, replies, results) as the run rendered them:
    what a model fine-tuned on them has seen. With the ids of the prompt being answered (added per
    `Generator.predict`), the usual `GenerationConfig.output_vocab` for a fine-tuned run: its training data."""
    fmt = fmt.for_tokenizer(tokenizer)
    ids: set[int] = set()
    for dialogue in dialogues:
        for sample in fmt.render(with_argument_order(dialogue, argument_order), observation=observation):
            ids.update(encode(sample, tokenizer).input_ids)
    return frozenset(ids)


class SubsetHead(torch.nn.Module):
    """An output layer that computes the logits of `ids` only; every other token gets the lowest float, so greedy
    (and schema-constrained) decoding chooses among `ids` exactly as the whole head would have, unless the whole
    head's best token lies outside them. Built from the head's effective weights (head(I) - head(0)), so a head
    wrapped by an adapter (LoRA on lm_head, trained token rows) is restricted as it computes. `compact`: the logits
    of `ids` only, in the order of `index` (sorted ids), for a caller that maps the argmax back itself."""

    def __init__(self, head: torch.nn.Module, ids: Iterable[int], compact: bool = False):
        super().__init__()
        self.compact = compact
        weight = getattr(head, "weight", None)
        param = weight if isinstance(weight, torch.Tensor) else next(head.parameters())
        hidden = param.shape[1]
        with torch.no_grad():
            if type(head) is torch.nn.Linear:  # a plain layer (a merged adapter): its rows are the weights, taken
                bias = head.bias if head.bias is not None else param.new_zeros(param.shape[0])  # in microseconds
                index = torch.tensor(sorted(i for i in ids if 0 <= i < bias.shape[-1]), dtype=torch.long,
                                     device=param.device)
                weight_rows = param.index_select(0, index)
            else:
                bias = head(torch.zeros(1, hidden, dtype=param.dtype, device=param.device))[0]
                index = torch.tensor(sorted(i for i in ids if 0 <= i < bias.shape[-1]), dtype=torch.long,
                                     device=param.device)
                eye = torch.eye(hidden, dtype=param.dtype, device=param.device)
                # head(I) in slices of 256 rows: never a hidden x vocab copy of the weights
                rows = [(head(eye[start:start + 256]) - bias).index_select(-1, index)
                        for start in range(0, hidden, 256)]
                weight_rows = torch.cat(rows).T
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("weight_rows", weight_rows.contiguous(), persistent=False)
        self.register_buffer("bias_rows", bias.index_select(-1, index).contiguous(), persistent=False)
        self.vocab_size = bias.shape[-1]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        sub = torch.nn.functional.linear(hidden, self.weight_rows, self.bias_rows)
        if self.compact:
            return sub
        out = sub.new_full((*sub.shape[:-1], self.vocab_size), torch.finfo(sub.dtype).min)
        return out.index_copy_(-1, self.index, sub)


class restricted_head:
    """`with restricted_head(model, ids):` the model's output layer is a `SubsetHead` over `ids` inside the block
    and the original one again after it (nothing changes when `ids` is None). With `compact`, the layer gives the
    logits of the ids in `index` only (None where the layer was not swapped: the whole vocabulary's logits)."""

    def __init__(self, model: Any, ids: set[int] | None, compact: bool = False):
        self.model, self.ids, self.compact = model, ids, compact
        self.owner = self.original = None
        self.index: torch.Tensor | None = None

    def __enter__(self):
        if self.ids is None:
            return self
        owner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        head = owner.get_output_embeddings()
        if head is None:
            return self
        was_training = head.training
        head.eval()  # the effective weights without dropout
        try:
            subset = SubsetHead(head, self.ids, compact=self.compact)
        finally:
            head.train(was_training)
        try:
            owner.set_output_embeddings(subset)
        except (AttributeError, NotImplementedError):  # remote code without a setter: the whole head, as before
            warnings.warn(f"{type(owner).__name__} cannot swap its output layer; generating over the whole vocabulary")
            return self
        self.owner, self.original = owner, head
        if self.compact:
            self.index = subset.index
        return self

    def __exit__(self, *exc):
        if self.owner is not None:
            self.owner.set_output_embeddings(self.original)
        return False
