"""Prompts that share their start are read once: the KV cache of a long prompt serves the shorter prompts it begins
with (`Generator.predict`, `GenerationConfig.reuse_prefix`).

An evaluation's turn units of one dialogue share their history: turn k's prompt is turn k-1's prompt, its gold
answer and the next user message. `generate` needs the cache of a prompt p but its last token, p[:-1] (it feeds the
last token itself and decodes from there), and the keys and values of a causal prefix do not depend on what follows
it. So a *host* prompt is read by one forward pass, and every prompt p whose p[:-1] begins the host takes its cache
from the host's first len(p) - 1 positions. Hosts are chosen longest first: a dialogue's last unit hosts the others.
A prompt no longer prompt begins with (the first of another dialogue, one cut at the front to fit
`max_prompt_tokens`, one whose tokens change where its text ends) is its own host: it shares nothing, and nothing
is wrong. The tokens are compared, never the text, so a tokenization that is not prefix-stable only costs reads.

A batch's cache is assembled as `generate` would have left it after reading the left-padded prompts but their last
tokens: row r holds p_r[:-1] at its right end, zeros in the padding (which the attention mask hides), and every
real position counts from the row's first token, as `generate` counts them (`cumsum(mask) - 1`). Sliding-window
layers (Gemma-3's, window 512) keep every token while a host is read (`activate_past_recording`), and the assembled
cache's layers are given each row's whole prefix, so they keep what a plain prefill keeps (its last window).

Memory: a host's cache is read when a batch first needs it and dropped after the last batch that uses it. Gemma-3-270M
holds 18 layers x 1 key-value head x 256 dimensions, keys and values: 18 KiB a token in bfloat16.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PrefixStats:
    """What prefix reuse did, over a generator's `predict` calls."""

    reads: int = 0
    """Forward passes over host prompts."""
    tokens_read: int = 0
    """Prompt tokens those passes read (without reuse each prompt's tokens are read by its batch's prefill)."""
    prompts_served: int = 0
    """Prompts whose cache came from a host (themselves included)."""
    seconds: float = 0.0
    """Time in the hosts' forward passes."""
    peak_bytes: int = 0
    """Most bytes of host keys and values held at once."""


def reusable(model: Any) -> bool:
    """Whether `model`'s prompts can share a read: a model of transformers' own code (no remote code, whose cache
    may be laid out otherwise), bare or with a PEFT adapter but no prompt-learning one (its virtual tokens are in
    no prompt's ids), whose cache is made of plain or sliding-window dynamic layers (not chunked attention, whose
    chunks count from the padded start; not recurrent states)."""
    try:
        from transformers import PreTrainedModel
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, PreTrainedModel) or not type(base).__module__.startswith("transformers."):
        return False
    adapters = getattr(model, "peft_config", None) or {}
    if any(getattr(c, "is_prompt_learning", False) for c in adapters.values()):
        return False
    try:
        if getattr(base.config.get_text_config(decoder=True), "attention_chunk_size", None) is not None:
            return False
        layers = DynamicCache(config=base.config).layers
    except Exception:  # a config the cache cannot read: no reuse, the plain path
        return False
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def serves(host: Sequence[int], prompt: Sequence[int]) -> bool:
    """Whether `host`'s cache holds `prompt`'s: `prompt` but its last token begins `host`."""
    k = len(prompt) - 1
    return len(host) >= k and (k == 0 or host[k - 1] == prompt[k - 1] and list(host[:k]) == list(prompt[:k]))


def plan_hosts(prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> dict[int, int]:
    """For each of `rows` (indexes into `prompts`), the index of the prompt whose read holds its cache: the first
    longer-or-equal prompt that serves it, else itself. Longest first, so a dialogue's last unit hosts the others."""
    hosts: list[int] = []
    host_of: dict[int, int] = {}
    for i in sorted(rows, key=lambda i: -len(prompts[i])):  # stable: ties keep the rows' order
        host = next((h for h in hosts if serves(prompts[h], prompts[i])), None)
        if host is None:
            hosts.append(i)
            host = i
        host_of[i] = host
    return host_of


class PrefixCaches:
    """The host caches of one `predict` call over `prompts`, whose `batches` will be generated in this order: each
    host is read when a batch first needs it, over as many tokens as its longest served prefix, and dropped after
    the last batch that uses it. `cache(rows)` assembles a fresh cache for one batch."""

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], batches: Sequence[Sequence[int]],
                 stats: PrefixStats | None = None):
        self.model, self.prompts = model, prompts
        self.stats = stats if stats is not None else PrefixStats()
        self.host_of = plan_hosts(prompts, [i for batch in batches for i in batch])
        self.need: dict[int, int] = {}  # host -> tokens read: its longest served prefix
        for i, host in self.host_of.items():
            self.need[host] = max(self.need.get(host, 0), len(prompts[i]) - 1)
        self.left = Counter(self.host_of.values())  # host -> rows not generated yet
        self.kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # host -> per layer (heads, tokens, dim)
        self.held = 0

    @property
    def shares(self) -> bool:
        """Whether any prompt takes its cache from another's read (else reuse saves nothing)."""
        return any(host != i for i, host in self.host_of.items())

    def cache(self, rows: Sequence[int]) -> Any:
        """A fresh `DynamicCache` for the batch of `rows`, left-padded to their longest prompt: width - 1 positions,
        row r's prefix at its right end (as `generate` would have left it before the prompts' last token)."""
        for host in dict.fromkeys(self.host_of[i] for i in rows):
            if host not in self.kv:
                self._read(host)
        cache = new_cache(self.model)
        width = max(len(self.prompts[i]) for i in rows) - 1
        for layer in range(len(cache.layers)):
            first = self.kv[self.host_of[rows[0]]][layer][0]
            keys = first.new_zeros((len(rows), first.shape[0], width, first.shape[2]))  # (B, heads, width - 1, dim)
            values = keys.clone()
            for r, i in enumerate(rows):
                k = len(self.prompts[i]) - 1
                host_keys, host_values = self.kv[self.host_of[i]][layer]
                keys[r, :, width - k:] = host_keys[:, :k]
                values[r, :, width - k:] = host_values[:, :k]
            cache.update(keys, values, layer)
        return cache

    def release(self, rows: Sequence[int]) -> None:
        """`rows` are generated: drop each host no later batch needs."""
        for i in rows:
            host = self.host_of[i]
            self.left[host] -= 1
            if self.left[host] == 0 and host in self.kv:
                self.held -= sum(k.nbytes + v.nbytes for k, v in self.kv.pop(host))

    def _read(self, host: int) -> None:
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        ids = torch.tensor([list(self.prompts[host][:self.need[host]])], dtype=torch.long, device=device)
        cache = new_cache(self.model, keep_all=True)
        was_training = self.model.training
        self.model.eval()
        try:  # one row, no padding: positions 0.. as `generate` counts from a row's first real token
            self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                       position_ids=torch.arange(ids.shape[1], device=device)[None], past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
        finally:
            self.model.train(was_training)
        self.kv[host] = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
        self.held += sum(k.nbytes + v.nbytes for k, v in self.kv[host])
        stats = self.stats
        stats.reads += 1
        stats.tokens_read += ids.shape[1]
        stats.prompts_served += sum(1 for h in self.host_of.values() if h == host)
        stats.seconds += time.perf_counter() - started
        stats.peak_bytes = max(stats.peak_bytes, self.held)


def new_cache(model: Any, keep_all: bool = False) -> Any:
    """An empty `DynamicCache` laid out as `model` builds its own (sliding-window layers where its config has them);
    with `keep_all`, the sliding-window layers keep every token instead of their last window."""
    from transformers.cache_utils import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache = DynamicCache(config=base.config)
    if keep_all:
        cache.activate_past_recording()
    return cache
