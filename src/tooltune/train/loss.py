"""The training loss, computed only where it is needed: the LM head and cross-entropy run at trained positions.

About 13% of the tokens in the course dialogues are trained targets and Gemma's vocabulary has 262k entries, so the
(B, T, V) logits of a plain forward are mostly wasted work and memory. `TokenLoss` takes the decoder's hidden states,
gathers the rows whose shifted label is a target and applies the head to those rows only. It returns the SUM of token
losses and the number of trained tokens, so the loop can normalise by the trained tokens of a whole optimizer step.

Methods with virtual tokens (prompt, ptuning, prefix) go through the PEFT model's own forward instead (the plain path):
PEFT inserts the virtual tokens or past key/values there, and re-implementing that would copy PEFT internals. Their
loss is the same sum over the same targets; only the speed-up is lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tooltune.train.data import IGNORE


def transformers_model(model: nn.Module) -> nn.Module:
    """The Hugging Face *ForCausalLM under a PEFT wrapper (LoRA layers stay injected in it), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_logits(causal_lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on `hidden` (N, H) -> (N, V) float32, with Gemma's final logit soft-capping where configured."""
    logits = causal_lm.get_output_embeddings()(hidden).float()
    cap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class TokenLoss(nn.Module):
    """forward(batch) -> (sum of token cross-entropies, number of trained tokens). Owns `model`'s parameters, so
    wrapping it (DDP/FSDP through accelerate) wraps the model."""

    def __init__(self, model: nn.Module, plain: bool):
        super().__init__()
        self.model = model
        self.plain = plain

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None, weights=None):
        """`weights` (B,): per-example loss weights (data.loss_weights); the count stays the plain token count."""
        targets = labels[:, 1:]  # the token at t is predicted from position t-1
        keep = targets != IGNORE  # (B, T-1)
        if self.plain:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            # Prompt tuning prepends its virtual tokens' logits: the last T positions belong to the input.
            picked = logits[:, -input_ids.shape[1]:-1][keep].float()
        else:
            causal_lm = transformers_model(self.model)
            extra = {"position_ids": position_ids} if position_ids is not None else {}
            hidden = causal_lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                          **extra).last_hidden_state  # (B, T, H)
            picked = head_logits(causal_lm, hidden[:, :-1][keep])  # (N, V), N = trained tokens
        if weights is None:
            return F.cross_entropy(picked, targets[keep], reduction="sum"), keep.sum()
        per_token = F.cross_entropy(picked, targets[keep], reduction="none")  # (N,)
        row_weight = weights[:, None].expand_as(keep)[keep].to(per_token.dtype)  # (N,): each token's example weight
        return (per_token * row_weight).sum(), keep.sum()


@torch.no_grad()
def fast_path_agrees(module: TokenLoss, batch: dict) -> tuple[bool, float, float]:
    """Does the trained-positions path give the model's own loss on `batch`? (ok, fast loss, plain loss).

    The fast path re-implements the last step of a *ForCausalLM forward (head, soft-capping). A model class that does
    more there (Cohere's logit_scale, Granite's logits_scaling, ...) would silently train on another loss, so the loop
    checks one batch first and falls back to the plain path when they disagree.
    """
    was_training = module.training
    module.eval()  # no dropout: both paths see the same network
    try:
        fast_sum, n = module(**batch)
        module.plain = True
        plain_sum, _ = module(**batch)
    finally:
        module.plain = False
        module.train(was_training)
    fast, plain = float(fast_sum / n), float(plain_sum / n)
    low_precision = next(module.parameters()).dtype in (torch.float16, torch.bfloat16)
    return abs(fast - plain) <= (2e-2 if low_precision else 1e-4) * max(1.0, abs(plain)), fast, plain
