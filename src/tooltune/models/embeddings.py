"""Special-token embeddings: find rows the base checkpoint never trained, give new and untrained rows a sensible
start, and make exactly those rows trainable under PEFT.

Why: in Gemma-3-270M (base) the rows of `<start_of_turn>`, `<end_of_turn>`, `<pad>` are untrained. Their norms
look ordinary (every row of that checkpoint has norm ~1.03), but they point the same way as the ~6200 reserved
`<unusedN>` rows (cosine 0.95-0.99 with those rows' mean direction, against a median of 0.32 for ordinary tokens):
the direction rows drift to when no gradient ever reaches them. bench/results/base.md has the numbers. A fine-tune
that trains only linear layers (LoRA on attention/MLP) never moves those rows, so the model cannot learn to emit
the end-of-turn token and generation runs to the length limit. Role tokens the formats code adds are new rows and
have the same problem.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

INITS = ("mean", "text")
# Two signs of a never-trained row, one per way checkpoints leave them:
# - norm far below the median (zero-ish init plus weight decay: Llama-3's reserved tokens, many others);
# - direction shared with the checkpoint's reserved tokens (Gemma 3: all untrained rows converge to one vector).
UNTRAINED_NORM_FRACTION = 0.2
UNTRAINED_COSINE = 0.9
RESERVED_TOKEN = re.compile(r"<unused\d+>|<\|reserved_special_token_\d+\|>|<extra_id_\d+>")
MIN_RESERVED_ROWS = 8  # fewer reserved rows than this give no reliable common direction


def _token_ids(tokenizer, tokens: Iterable[int | str]) -> list[int]:
    ids = []
    for token in tokens:
        if isinstance(token, str):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
                raise ValueError(f"{token!r} is not a single token of the tokenizer: add it before preparing it")
            token = token_id
        ids.append(int(token))
    return sorted(set(ids))


def row_norms(model):
    """The L2 norm of each input-embedding row, shape (V,)."""
    return model.get_input_embeddings().weight.detach().float().norm(dim=-1)


def reserved_direction(model, tokenizer):
    """The unit mean direction of the reserved-token rows (`<unusedN>`, ...), shape (C,); None if too few."""
    size = model.get_input_embeddings().weight.shape[0]
    reserved = [i for token, i in tokenizer.get_vocab().items() if i < size and RESERVED_TOKEN.fullmatch(token)]
    if len(reserved) < MIN_RESERVED_ROWS:
        return None
    rows = model.get_input_embeddings().weight.detach().float()[reserved]
    mean = (rows / rows.norm(dim=-1, keepdim=True)).mean(dim=0)
    return mean / mean.norm()


def untrained_mask(model, tokenizer):
    """Boolean (V,): True where the input-embedding row looks never trained (see the two signs above)."""
    weight = model.get_input_embeddings().weight.detach().float()
    norms = weight.norm(dim=-1)
    mask = norms < UNTRAINED_NORM_FRACTION * norms.median()
    direction = reserved_direction(model, tokenizer)
    if direction is not None:
        mask |= (weight @ direction) / norms.clamp_min(1e-12) >= UNTRAINED_COSINE
    return mask


def untrained_token_ids(model, tokenizer, among: Iterable[int] | None = None) -> list[int]:
    """Ids (all, or those in `among`) whose input-embedding row looks never trained."""
    mask = untrained_mask(model, tokenizer)
    candidates = range(len(mask)) if among is None else [i for i in among if i < len(mask)]
    return [i for i in candidates if mask[i]]


def _outputs_tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is None or out.weight is model.get_input_embeddings().weight


def _description_ids(tokenizer, token_id: int, descriptions: dict[int, str] | None) -> list[int]:
    # "<|assistant|>" -> "assistant", "<end_of_turn>" -> "end of turn": the words the token stands for.
    text = (descriptions or {}).get(token_id)
    if text is None:
        text = tokenizer.convert_ids_to_tokens(token_id).strip("<|>[]").replace("_", " ").strip() or "token"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"description {text!r} of token {token_id} encodes to no tokens")
    return ids


def prepare_embeddings(model, tokenizer, token_ids: Sequence[int | str], init: str = "mean",
                       descriptions: dict[int, str] | None = None) -> list[int]:
    """Resize the embeddings to the tokenizer, initialise new or untrained rows among `token_ids`, return their ids.

    `token_ids`: ids or token strings (already in the tokenizer, e.g. role tokens the formats code added).
    A row is (re)initialised when it is new (id >= the old embedding size) or looks untrained (`untrained_mask`);
    rows the checkpoint trained are left alone. `init`:
      "mean": the direction of the mean of the trained rows (new tokens start as an "average" token: neither
              likely nor impossible);
      "text": the direction of the mean of the rows of a descriptive text (`descriptions[id]`, else the token's
              name without brackets), so that distinct tokens start distinct;
    both scaled to the median norm of the trained rows, so that a prepared row never looks untrained again.
    Untied output embeddings (lm_head) get the same treatment from their own rows. The returned ids are the rows
    the fine-tune must train (see `trainable_token_config`); an empty list means nothing needs training.
    """
    import torch

    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
    ids = _token_ids(tokenizer, token_ids)
    old_size = model.get_input_embeddings().weight.shape[0]
    needed = max([len(tokenizer)] + [i + 1 for i in ids])
    if needed > old_size:
        # mean_resizing=False: transformers' own sampling would be overwritten below anyway.
        model.resize_token_embeddings(needed, mean_resizing=False)
    trained_mask = ~untrained_mask(model, tokenizer)
    trained_mask[old_size:] = False
    fresh = [i for i in ids if not trained_mask[i]]
    if not fresh:
        return []
    matrices = [model.get_input_embeddings().weight]
    if not _outputs_tied(model):
        matrices.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for weight in matrices:
            trained = weight[trained_mask].float()
            # An average of many rows is much shorter than any row (Gemma: 0.46 vs 1.03); at that length the
            # token would look untrained again and its tied logit would stay near zero, so scale to a typical norm.
            typical_norm = trained.norm(dim=-1).median()
            mean = trained.mean(dim=0)
            for i in fresh:
                row = mean
                if init == "text":
                    # Pieces that are themselves untrained say nothing: use the mean if nothing else is left.
                    source = [j for j in _description_ids(tokenizer, i, descriptions) if trained_mask[j]]
                    row = weight[source].float().mean(dim=0) if source else mean
                weight[i] = (row * typical_norm / row.norm().clamp_min(1e-12)).to(weight.dtype)
    return fresh


def _module_name(model, module) -> str:
    return next(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is module)


def trainable_token_config(ids: Sequence[int], model=None) -> dict:
    """Keyword arguments for `peft.LoraConfig` (and the other PEFT configs that accept them) that train exactly
    the embedding rows `ids` besides the adapter. Pass `model` when its lm_head may be untied from the embeddings.

    `trainable_token_indices` trains a sparse delta on those rows only. With tied input/output embeddings (Gemma,
    SmolLM2) peft 0.21.2 ties the delta to lm_head as well; with untied ones both modules are named, so both get
    their own delta (tests/test_models.py checks that after training exactly those rows changed). Not
    `modules_to_save=["embed_tokens"]`: it copies and trains the whole matrix (Gemma: 262k x 640 = 168M
    parameters) and unties lm_head on merge (with `ensure_weight_tying=True` it stays tied but still trains
    every row).
    """
    ids = sorted({int(i) for i in ids})
    if not ids:
        return {}
    if model is None or _outputs_tied(model):
        return {"trainable_token_indices": ids}
    return {"trainable_token_indices": {_module_name(model, model.get_input_embeddings()): ids,
                                        _module_name(model, model.get_output_embeddings()): ids}}
