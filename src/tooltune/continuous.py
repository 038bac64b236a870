"""Greedy decoding with continuous batching, for `Generator.predict` (`GenerationConfig.continuous`).

`generate` decodes a batch until its longest row ends; the rows that ended before wait in it, padded. Over the course
test set (batch 16, the demo's model) that was 1,887 steps, most of evaluation's time. Here a row leaves the batch
when it ends, and once a quarter of the places are free the next prompts (in `predict`'s order) take them: their
caches (each prompt but its last token, from `tooltune.prefix` or read here) are joined to the running rows', every
row left-padded to the longest, so each row's tokens stay at the right end, as `generate` lays them out.

Each step does for a row what `generate`'s greedy step does: the model reads the row's last token at its own position
(the count of its tokens before), under an attention mask that hides the padding, and the next token is the argmax of
the logits (with `output_vocab`, over that vocabulary's rows only: the same argmax, since every other token has the
lowest value there). A row ends at an end token, at one of the format's text stops (`StopStringCriteria`, as
`generate` checks them, over the prompt and the tokens so far) or at `max_new_tokens`. So a row gets `generate`'s
tokens up to floating-point rounding: the same values, computed beside other rows in other shapes (identical in
float32 in the tests; counted on the demo's model in `bench/results/eval_speed.md`).

Greedy decoding only, with no logits processor (no schema constraint): `Generator` takes `generate` otherwise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tooltune.prefix import new_cache

# `generate` would apply these from a model's own generation config; a model that sets any takes `generate`'s path.
PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                    "begin_suppress_tokens", "suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                    "sequence_bias", "encoder_repetition_penalty", "exponential_decay_length_penalty")
NEUTRAL = (None, 0, 1.0, [], ())


def plain_greedy(model: Any) -> bool:
    """Whether `generate`'s greedy decoding of `model` applies no logits processor of the model's own config."""
    config = getattr(model, "generation_config", None)
    return config is None or all(getattr(config, name, None) in NEUTRAL for name in PROCESSOR_FIELDS)


class _Rows:
    """The running batch: per row its unit, next token, position and tokens so far; the cache and 2-D mask."""

    def __init__(self, units: list[int], cache: Any, mask: torch.Tensor, next_ids: torch.Tensor,
                 positions: torch.Tensor):
        self.units, self.cache, self.mask, self.next_ids, self.positions = units, cache, mask, next_ids, positions
        self.out: list[list[int]] = [[] for _ in units]

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_ids, self.positions = self.mask[index], self.next_ids[index], self.positions[index]
        self.units = [self.units[r] for r in rows]
        self.out = [self.out[r] for r in rows]


def _fit(states: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, heads, columns, dim) states right-aligned in `width` columns: the last ones kept, zeros to the left
    (padding, or tokens a sliding-window layer no longer holds, which no later query can see)."""
    columns = states.shape[-2]
    if columns >= width:
        return states[:, :, columns - width:]
    pad = states.new_zeros((*states.shape[:2], width - columns, states.shape[-1]))
    return torch.cat([pad, states], dim=-2)


def join(model: Any, parts: Sequence[tuple[Any, torch.Tensor]]) -> tuple[Any, torch.Tensor]:
    """One cache and attention mask from several batches' (cache, 2-D mask), their rows stacked in order, each
    left-padded to the longest row's tokens (columns that are padding in every row are dropped)."""
    width = max(int(mask.sum(1).max()) for _, mask in parts)
    cache = new_cache(model)
    for layer in range(len(cache.layers)):
        keys = torch.cat([_fit(part.layers[layer].keys, width) for part, _ in parts])
        values = torch.cat([_fit(part.layers[layer].values, width) for part, _ in parts])
        cache.update(keys, values, layer)
    masks = [mask[:, -width:] if mask.shape[1] >= width else
             torch.cat([mask.new_zeros((mask.shape[0], width - mask.shape[1])), mask], 1) for _, mask in parts]
    return cache, torch.cat(masks)


def decode(generator: Any, prompts: Sequence[Sequence[int]], order: Sequence[int],
           first_cache: Callable[[list[int]], tuple[Any, torch.Tensor]],
           done: Callable[[int, list[int]], None], index: torch.Tensor | None = None) -> None:
    """Greedy continuations of `prompts[i]` for i in `order`, `batch_size` rows at a time; `done(i, ids)` gets each
    row's generated ids as it ends (an end token kept last). `first_cache(rows)` returns the cache of those rows'
    prompts but their last tokens, left-padded, and its 2-D mask. `index`: the output layer computes only these
    token ids' logits (`SubsetHead` in compact form), in this order."""
    config, model = generator.config, generator.model
    device = next(model.parameters()).device
    size = config.batch_size
    ends = torch.tensor(generator.end_ids, dtype=torch.long, device=device)
    stop = generator.text_stop_criterion() if generator.text_stops else None
    suppressed = torch.tensor(generator.suppressed, dtype=torch.long, device=device)
    waiting = deque(order)
    batch: _Rows | None = None
    while waiting or batch is not None:
        free = size - (len(batch.units) if batch is not None else 0)
        if waiting and (batch is None or free >= max(1, size // 4)):
            batch = _admit(model, batch, [waiting.popleft() for _ in range(min(free, len(waiting)))], prompts,
                           first_cache, device)
        tokens = _step(model, batch, index, suppressed)
        finished = torch.isin(tokens, ends)
        if stop is not None:
            finished |= _stopped(stop, generator.pad_id, batch, prompts, tokens)
        kept = []
        for row, (unit, out) in enumerate(zip(batch.units, batch.out)):
            out.append(int(tokens[row]))
            if finished[row] or len(out) >= config.max_new_tokens:
                done(unit, out)
            else:
                kept.append(row)
        batch.next_ids = tokens
        if not kept:
            batch = None
        elif len(kept) < len(batch.units):
            batch.keep(kept)


def _admit(model: Any, batch: _Rows | None, rows: list[int], prompts: Sequence[Sequence[int]],
           first_cache: Callable[[list[int]], tuple[Any, torch.Tensor]], device: Any) -> _Rows:
    cache, mask = first_cache(rows)
    parts = [(cache, mask.to(device))]
    next_ids = torch.tensor([prompts[i][-1] for i in rows], dtype=torch.long, device=device)
    positions = torch.tensor([len(prompts[i]) - 1 for i in rows], dtype=torch.long, device=device)
    if batch is None:
        return _Rows(rows, cache, mask.to(device), next_ids, positions)
    joined, joined_mask = join(model, [(batch.cache, batch.mask)] + parts)
    merged = _Rows(batch.units + rows, joined, joined_mask, torch.cat([batch.next_ids, next_ids]),
                   torch.cat([batch.positions, positions]))
    merged.out = batch.out + [[] for _ in rows]
    return merged


def _step(model: Any, batch: _Rows, index: torch.Tensor | None, suppressed: torch.Tensor) -> torch.Tensor:
    """One token for every row: read each row's next token, append it to the cache, return the argmax."""
    mask = torch.cat([batch.mask, batch.mask.new_ones((batch.mask.shape[0], 1))], 1)
    logits = model(input_ids=batch.next_ids[:, None], attention_mask=mask, position_ids=batch.positions[:, None],
                   past_key_values=batch.cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    batch.mask, batch.positions = mask, batch.positions + 1
    if index is not None:
        return index[logits.argmax(-1)]
    if suppressed.numel():
        logits = logits.index_fill(-1, suppressed, float("-inf"))
    return logits.argmax(-1)


def _stopped(criterion: Any, pad_id: int, batch: _Rows, prompts: Sequence[Sequence[int]],
             tokens: torch.Tensor) -> torch.Tensor:
    """The text-stop criterion over each row's last tokens (prompt and generated, left-padded as `generate`'s)."""
    width = criterion.maximum_token_len
    tails = []
    for unit, out, token in zip(batch.units, batch.out, tokens.tolist()):
        tail = (list(prompts[unit][-width:]) + out + [token])[-width:]
        tails.append([pad_id] * (width - len(tail)) + tail)
    return criterion(torch.tensor(tails, dtype=torch.long, device=tokens.device), None)
