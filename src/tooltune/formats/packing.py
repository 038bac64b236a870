"""Batching encoded examples: packing several into one row, or grouping by length; and the padding each wastes.

`pack` puts examples into rows of at most `max_length` tokens (first-fit decreasing) with `position_ids` restarting
at 0 for every example. With no `attention_mask`, no KV cache (`use_cache=False`) and `position_ids` given,
transformers (5.x, `masking_utils.find_packed_sequence_indices`) builds a block-diagonal causal mask from the position
restarts for sdpa and eager attention, so no token attends across examples; tests/test_formats_packing.py checks
that packed and unpacked logits agree for a tiny Llama and a tiny GPT-2 (sdpa and eager). For a model that does not
do this, `packed_attention_mask` gives the same mask as an explicit 4D tensor.

Labels: the first token of every packed example is not trained (the loss would otherwise ask the previous
example's last token to predict it); unpacked, the shift never trains a sequence's first token either, so the loss
is the same.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

from tooltune.errors import InputError
from tooltune.formats.base import IGNORE_INDEX, Example


def pack(examples: Sequence[Example], max_length: int) -> list[Example]:
    """Rows (`Example`s with `position_ids`) of at most `max_length` tokens each (first-fit decreasing,
    deterministic). An example longer than `max_length` is an error: encode with the same `max_length` first."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        if n > max_length:
            raise InputError(f"example {i} has {n} tokens, more than max_length={max_length}: encode it with "
                             f"max_length first", field="max_length")
        for b, free in enumerate(room):
            if free >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    return [_packed_row([examples[i] for i in members]) for members in bins]


def _packed_row(members: Sequence[Example]) -> Example:
    """One row of packed examples; loss weights kept (per token: the example's weight times the token's own)."""
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    weighted = any(ex.weight != 1.0 or ex.weights is not None for ex in members)
    weights: list[float] = []
    for ex in members:
        input_ids += ex.input_ids
        labels += [IGNORE_INDEX] + ex.labels[1:]
        positions += range(len(ex.input_ids))
        if weighted:
            weights += token_weights(ex)
    return Example(input_ids, labels, position_ids=positions, weights=weights if weighted else None)


def token_weights(ex: Example) -> list[float]:
    """Each token's loss weight: the example's weight times the token's own (1 where it has none)."""
    return [ex.weight * w for w in (ex.weights or [1.0] * len(ex.input_ids))]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors (B, T): input_ids, labels (IGNORE_INDEX on padding), and attention_mask; packed rows get
    position_ids INSTEAD of the mask: transformers then builds the block-diagonal causal mask from the restarts of the
    position ids (no token attends across packed examples; checked by tests/test_formats_packing.py). Call the model
    with `use_cache=False` then. Where any example carries loss weights, `weights` (B, T): each token's weight, the
    example's times the token's own (padding: 0, never trained)."""
    import torch

    width = max(len(ex.input_ids) for ex in examples)

    def pad(rows, value):
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    batch = {"input_ids": pad([ex.input_ids for ex in examples], pad_id),
             "labels": pad([ex.labels for ex in examples], IGNORE_INDEX)}
    if any(ex.position_ids is not None for ex in examples):
        # Padding gets positions 0, 0, ...: each pad is a sequence of its own, seen by nothing real.
        batch["position_ids"] = pad([ex.position_ids if ex.position_ids is not None
                                     else list(range(len(ex.input_ids))) for ex in examples], 0)
    else:
        batch["attention_mask"] = pad([[1] * len(ex.input_ids) for ex in examples], 0)
    if any(ex.weight != 1.0 or ex.weights is not None for ex in examples):
        batch["weights"] = torch.tensor([token_weights(ex) + [0.0] * (width - len(ex.input_ids)) for ex in examples],
                                        dtype=torch.float32)
    return batch


def packed_attention_mask(position_ids: Any, dtype: Any = None) -> Any:
    """A (B, 1, T, T) mask letting query i see key j only within the same packed example and j <= i (examples are
    told apart by their position ids restarting at 0). Boolean (True = may attend) for sdpa; with a float `dtype`,
    additive (0 or the dtype's minimum) for eager attention. transformers passes a 4D mask through unchanged."""
    import torch

    starts = (position_ids == 0).long()  # (B, T)
    seq = torch.cumsum(starts, dim=-1)  # (B, T): which example each token belongs to
    same = seq[:, :, None] == seq[:, None, :]  # (B, T, T)
    t = position_ids.shape[-1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=position_ids.device))
    allowed = (same & causal)[:, None, :, :]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int = 0,
                           mega_batches: int = 50) -> list[list[int]]:
    """Batches of indexes whose lengths are close (less padding), still shuffled: shuffle, cut into mega-batches
    of `batch_size * mega_batches`, sort each by length, cut into batches, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * mega_batches
    batches = []
    for m in range(0, len(order), span):
        mega = sorted(order[m:m + span], key=lambda i: -lengths[i])
        batches += [mega[b:b + batch_size] for b in range(0, len(mega), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[b:b + batch_size] for b in range(0, n, batch_size)]


class GroupByLengthSampler:
    """A `batch_sampler` for `torch.utils.data.DataLoader`: new length-grouped batches every epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = length_grouped_batches(self.lengths, self.batch_size, self.seed + self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the token slots in right-padded batches that are padding."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    used = sum(lengths[i] for b in batches for i in b)
    return 1 - used / slots if slots else 0.0
