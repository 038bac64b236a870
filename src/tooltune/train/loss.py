"""The training loss, computed only where it is needed: the LM head and cross-entropy run at trained positions.

About 13% of the tokens in the course dialogues are trained targets and Gemma's vocabulary has 262k entries, so the
(B, T, V) logits of a plain forward are mostly wasted work and memory. `TokenLoss` takes the decoder's hidden states,
gathers the rows whose shifted label is a target and applies the head to those rows only. It returns the SUM of token
losses and the number of trained tokens, so the loop can normalise by the trained tokens of a whole optimizer step.

With `train.output_vocab=domain` the head computes only the rows of the training data's own token ids (2,300 of
Gemma's 262,144 for the course dialogues in the llama2 format): the softmax is over those rows, the vocabulary that
`eval --domain-vocab` decodes with. That is another objective, not a faster way to the same one.

Methods with virtual tokens (prompt, ptuning, prefix) go through the PEFT model's own forward instead (the plain path):
PEFT inserts the virtual tokens or past key/values there, and re-implementing that would copy PEFT internals. Their
loss is the same sum over the same targets; only the speed-up is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tooltune.errors import ToolTuneError
from tooltune.formats import IGNORE_INDEX


def transformers_model(model: nn.Module) -> nn.Module:
    """The Hugging Face *ForCausalLM under a PEFT wrapper (LoRA layers stay injected in it), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_logits(causal_lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on `hidden` (N, H) -> (N, V) float32, with Gemma's final logit soft-capping where configured."""
    return softcap(causal_lm, causal_lm.get_output_embeddings()(hidden).float())


def softcap(causal_lm: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Gemma's final logit soft-capping, where the model's config sets it."""
    cap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def head_rows(causal_lm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The output layer's effective rows `ids` (K, H): its weight's rows, with peft's trained token rows
    (`trainable_token_indices`) in place, so gradients reach those rows and nothing else."""
    head = causal_lm.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)  # peft's TrainableTokensWrapper
    if adapter is None:
        if not isinstance(head, nn.Linear) or head.bias is not None:
            raise ToolTuneError(f"train.output_vocab=domain: the output layer is a {type(head).__name__}, not a plain "
                                f"linear layer; use train.output_vocab=all")
        return head.weight.index_select(0, ids)
    rows = adapter.base_layer.weight.index_select(0, ids)
    for name in adapter.active_adapters:
        trained = torch.tensor(adapter.token_indices[name], dtype=torch.long, device=ids.device)
        position = torch.full((int(max(ids.max(), trained.max())) + 1,), -1, dtype=torch.long, device=ids.device)
        position[ids] = torch.arange(len(ids), device=ids.device)
        where = position[trained]
        inside = where >= 0
        delta = adapter.trainable_tokens_delta[name].to(rows)
        rows = rows.index_copy(0, where[inside], delta[inside])
    return rows


class TokenLoss(nn.Module):
    """forward(batch) -> (sum of token cross-entropies, number of trained tokens). Owns `model`'s parameters, so
    wrapping it (DDP/FSDP through accelerate) wraps the model.

    `vocab`: token ids the softmax runs over (train.output_vocab=domain); None: the whole vocabulary. Targets outside
    it (only possible in dev data) are left out of the sum and of the count.

    `skip_padding_mask` (train.skip_padding_mask): a right-padded batch runs without its attention mask. In a causal
    LM no real token attends to a later one, so no real token sees a pad and the loss is the same; without a mask,
    sdpa takes its causal kernel (it skips the blocks above the diagonal, and reads grouped KV heads unexpanded)
    instead of reading a (B, 1, T, T) mask. Sliding-window layers still get their window: the model builds it."""

    def __init__(self, model: nn.Module, plain: bool, vocab: list[int] | None = None, skip_padding_mask: bool = True):
        super().__init__()
        self.model = model
        self.plain = plain
        self.skip_padding_mask = skip_padding_mask
        self.register_buffer("vocab", None, persistent=False)
        if vocab is not None:
            if plain:
                raise ToolTuneError("train.output_vocab=domain needs the trained-positions loss, which virtual-token "
                                    "methods do not use; use train.output_vocab=all")
            ids = torch.tensor(sorted(set(vocab)), dtype=torch.long)
            remap = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
            remap[ids] = torch.arange(len(ids))
            self.register_buffer("vocab", ids, persistent=False)
            self.register_buffer("remap", remap, persistent=False)

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None, weights=None):
        """`weights` (B, T): per-token loss weights aligned with `labels` (data.loss_weights, data.call_weight); the
        count stays the plain token count."""
        targets = labels[:, 1:]  # the token at t is predicted from position t-1
        keep = targets != IGNORE_INDEX  # (B, T-1)
        if self.plain:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            # Prompt tuning prepends its virtual tokens' logits: the last T positions belong to the input.
            picked = logits[:, -input_ids.shape[1]:-1][keep].float()
        else:
            causal_lm = transformers_model(self.model)
            extra = {"position_ids": position_ids} if position_ids is not None else {}
            if self.skip_padding_mask and attention_mask is not None and right_padded(attention_mask):
                attention_mask = None
            hidden = causal_lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                          **extra).last_hidden_state  # (B, T, H)
            rows = hidden[:, :-1][keep]  # (N, H), N = trained tokens
            if self.vocab is None:
                picked = head_logits(causal_lm, rows)  # (N, V)
            else:
                mapped = self.remap[targets.clamp(0, len(self.remap) - 1)]  # (B, T-1): position in the vocabulary
                mapped = torch.where(targets < len(self.remap), mapped, -1)
                inside = mapped[keep] >= 0  # (N,): targets inside the output vocabulary
                keep, targets = keep & (mapped >= 0), mapped
                picked = softcap(causal_lm, F.linear(rows[inside], head_rows(causal_lm, self.vocab)).float())
        if weights is None:
            return F.cross_entropy(picked, targets[keep], reduction="sum"), keep.sum()
        per_token = F.cross_entropy(picked, targets[keep], reduction="none")  # (N,)
        row_weight = weights[:, 1:][keep].to(per_token.dtype)  # (N,): each target token's weight
        return (per_token * row_weight).sum(), keep.sum()


def right_padded(mask: torch.Tensor) -> bool:
    """Is every row of the (B, T) mask ones, then zeros (collate's right padding)?"""
    return mask.dim() == 2 and bool((mask[:, 1:] <= mask[:, :-1]).all())


@torch.no_grad()
def fast_path_agrees(module: TokenLoss, batch: dict) -> tuple[bool, float, float]:
    """Does the trained-positions path give the model's own loss on `batch`? (ok, fast loss, plain loss).

    The fast path re-implements the last step of a *ForCausalLM forward (head, soft-capping). A model class that does
    more there (Cohere's logit_scale, Granite's logits_scaling, ...) would silently train on another loss, so the loop
    checks one batch first and falls back to the plain path when they disagree.
    """
    was_training, vocab = module.training, module.vocab
    module.eval()  # no dropout: both paths see the same network
    module.vocab = None  # the same objective on both paths: the whole vocabulary
    try:
        fast_sum, n = module(**batch)
        module.plain = True
        plain_sum, _ = module(**batch)
    finally:
        module.plain, module.vocab = False, vocab
        module.train(was_training)
    fast, plain = float(fast_sum / n), float(plain_sum / n)
    return _close(module, fast, plain), fast, plain


def _close(module: TokenLoss, got: float, want: float) -> bool:
    """Two mean losses of one batch agree, up to the rounding of the module's precision."""
    low_precision = next(module.parameters()).dtype in (torch.float16, torch.bfloat16)
    return abs(got - want) <= (2e-2 if low_precision else 1e-4) * max(1.0, abs(want))


@torch.no_grad()
def padding_mask_agrees(module: TokenLoss, batch: dict, pad_id: int, extra: int = 4) -> tuple[bool, float, float]:
    """Is the loss of `batch` the same without its padding mask? (ok, loss without, loss with).

    The last `extra` tokens of each row (keeping at least 2) become padding, so the check sees padding even where the
    batch has none, at no more positions than the model was given. A model that reads the mask for more than
    attention (positions counted from it, a bidirectional prefix) gives another loss here, and the loop keeps the
    mask for it.
    """
    mask = batch["attention_mask"]
    lengths = mask.sum(1)
    cut = torch.where(lengths > extra + 2, lengths - extra, lengths)  # (B,): each row's new length
    keep = torch.arange(mask.shape[1], device=mask.device)[None] < cut[:, None]  # (B, T): still right-padded
    padded = {"input_ids": batch["input_ids"].masked_fill(~keep, pad_id),
              "labels": batch["labels"].masked_fill(~keep, IGNORE_INDEX), "attention_mask": keep.long()}
    if "weights" in batch:
        padded["weights"] = batch["weights"] * keep
    was_training, skip = module.training, module.skip_padding_mask
    module.eval()
    try:
        module.skip_padding_mask = True
        without, n = module(**padded)
        module.skip_padding_mask = False
        with_mask, _ = module(**padded)
    finally:
        module.skip_padding_mask = skip
        module.train(was_training)
    a, b = float(without / n), float(with_mask / n)
    return _close(module, a, b), a, b
