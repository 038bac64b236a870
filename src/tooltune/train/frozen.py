"""Adapters on the top layers only, a backward pass that stops there, and a cache of the frozen bottom's output.

With `method.layers=top:K` the adapters sit on the last K decoder layers. The layers below them (the "bottom") then
have nothing to train: `FrozenBottom` runs them without autograd, so the backward pass ends at the lowest adapted
layer instead of running through every layer to the embeddings. With `train.cache_frozen=true` it also keeps the
bottom's output for each example (its own rows, padding cut off) the first time the example is seen, and serves it in
every later epoch: the bottom layers are then skipped, and a step costs only the top. The bottom never changes (no
adapter, no trained embedding row feeds it), so this is exact up to float rounding: on a tiny model the losses and
the saved adapter equal the uncached run's within 1e-6 (tests/test_train_frozen.py).

The cache lives in memory for one run (its size is reported in run.json); a resumed run fills it again as it goes,
so it is rebuilt whenever the data, the base, the format or K change.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from tooltune.errors import InputError, ToolTuneError
from tooltune.train.loss import transformers_model

LAYERS_HELP = "all, or top:K (adapters on the last K decoder layers only)"


def parse_layers(spec: str) -> int | None:
    """`all` -> None; `top:K` -> K (K >= 1). Raises InputError naming method.layers otherwise."""
    if spec == "all":
        return None
    match = re.fullmatch(r"top:(\d+)", spec)
    if not match or int(match.group(1)) < 1:
        raise InputError(f"must be {LAYERS_HELP}, not {spec!r}", field="method.layers")
    return int(match.group(1))


def decoder_layers(model: nn.Module, option: str = "method.layers", fallback: str = "method.layers=all"
                   ) -> nn.ModuleList:
    """The model's list of decoder blocks: the ModuleList whose children are the classes it names in
    `_no_split_modules` (LlamaDecoderLayer, Gemma3DecoderLayer, GPT2Block, ...). Where there is none, the error
    names `option`, the setting that needed the blocks, and `fallback`, the setting that does without them."""
    causal_lm = transformers_model(model)
    names = set(getattr(causal_lm, "_no_split_modules", None) or ())
    for module in causal_lm.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(type(m).__name__ in names for m in module):
            return module
    raise ToolTuneError(f"{option}: {type(causal_lm).__name__} names no repeated blocks "
                        f"(_no_split_modules); set {fallback}")


def cut_index(model: nn.Module, spec: str) -> int:
    """Index of the lowest adapted layer (0 for `all`, and for top:K on a model of at most K layers)."""
    top = parse_layers(spec)
    if top is None:
        return 0
    return max(0, len(decoder_layers(model)) - top)  # top:K on a model of K layers or fewer adapts them all


def top_layer_targets(model: nn.Module, spec: str, targets: tuple[str, ...]) -> list[str]:
    """Full names of the linear modules to adapt in the top layers: those named in `targets` (a module's last name),
    or every nn.Linear for ("all-linear",)."""
    causal_lm = transformers_model(model)
    layers = decoder_layers(causal_lm)
    cut = cut_index(causal_lm, spec)
    wanted = set(targets)
    prefix = next(name for name, module in causal_lm.named_modules() if module is layers)
    out = []
    for i in range(cut, len(layers)):
        for name, module in layers[i].named_modules():
            last = name.rsplit(".", 1)[-1]
            linear = isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
            if linear and (wanted == {"all-linear"} or last in wanted):
                out.append(f"{prefix}.{i}.{name}")
    if not out:
        raise InputError(f"no module named {', '.join(targets)} in the top {len(layers) - cut} layers",
                         field="method.target_modules")
    return out


class FrozenBottom:
    """Runs decoder layers [0, cut) without autograd, and with `cache` serves their output per example.

    The loop names the examples of each forward in `keys` (one hashable per batch row, None for a forward that is not
    cached); their true lengths come from the attention mask (right padding) or the row length.
    """

    def __init__(self, model: nn.Module, cut: int, cache: bool):
        if cut <= 0:
            raise ToolTuneError("FrozenBottom needs at least one frozen layer")
        self.layers = decoder_layers(model)
        self.cut, self.cache = cut, cache
        self.keys: list | None = None
        self.lengths: list[int] | None = None
        self.store: dict = {}
        self.hits = self.misses = 0
        self._serving = False
        for i in range(cut):
            layer = self.layers[i]
            layer.forward = self._wrap(layer.forward, last=i == cut - 1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())

    def _cached(self) -> bool:
        return self.cache and self.keys is not None and all(k in self.store for k in self.keys)

    def _wrap(self, forward, last: bool):
        def run(hidden_states, *args, **kwargs):
            if not last:
                if self._cached():
                    return hidden_states  # skipped: the last frozen layer returns the cached output
                with torch.no_grad():
                    return forward(hidden_states, *args, **kwargs)
            if self._cached():
                self.hits += 1
                return self._assemble(hidden_states)
            with torch.no_grad():
                out = forward(hidden_states, *args, **kwargs)
            if self.cache and self.keys is not None:
                self.misses += 1
                for row, (key, length) in enumerate(zip(self.keys, self.lengths)):
                    self.store[key] = out[row, :length].clone()
            return out
        return run

    def _assemble(self, like: torch.Tensor) -> torch.Tensor:
        """The batch's cached rows, right-padded with zeros to `like`'s shape (B, T, H)."""
        out = torch.zeros(like.shape, dtype=self.store[self.keys[0]].dtype, device=like.device)
        for row, key in enumerate(self.keys):
            cached = self.store[key]
            out[row, :cached.shape[0]] = cached.to(like.device)
        return out

    def set_batch(self, keys: list | None, lengths: list[int] | None = None) -> None:
        """Name the rows of the next forward (None: do not cache it)."""
        self.keys, self.lengths = keys, lengths
