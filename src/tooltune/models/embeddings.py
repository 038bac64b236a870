"""Special-token embeddings: find rows the base checkpoint never trained, give new and untrained rows a sensible
start, and make exactly those rows trainable under PEFT.

Why: in Gemma-3-270M (base) the rows of the chat special tokens (`<start_of_turn>`, `<end_of_turn>`, ...) are far
smaller than ordinary rows (bench/results/base.md gives the numbers). A fine-tune that trains only linear layers
(LoRA on q/k/v/o, MLP) never moves those rows, so the model cannot learn to emit the end-of-turn token and
generation runs to the length limit. The same holds for role tokens that the formats code adds to the vocabulary.
"""

from __future__ import annotations

from typing import Iterable, Sequence

INITS = ("mean", "text")
# A row whose norm is below this fraction of the median row norm is taken as never trained: trained rows of the
# checkpoints measured here have norms within a factor ~3 of the median, untrained ones are orders smaller.
UNTRAINED_NORM_FRACTION = 0.2


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


def untrained_token_ids(model, among: Iterable[int] | None = None) -> list[int]:
    """Ids (all, or those in `among`) whose input-embedding row is much smaller than the median row."""
    norms = row_norms(model)
    threshold = UNTRAINED_NORM_FRACTION * norms.median()
    candidates = range(len(norms)) if among is None else [i for i in among if i < len(norms)]
    return [i for i in candidates if norms[i] < threshold]


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
    A row is (re)initialised when it is new (id >= the old embedding size) or untrained (`untrained_token_ids`);
    rows the checkpoint trained are left alone. `init`:
      "mean": the mean of the trained rows (new tokens start as an "average" token: neither likely nor impossible);
      "text": the mean of the rows of a descriptive text (`descriptions[id]`, else the token's name without
              brackets), so that distinct tokens start distinct.
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
    untrained = set(untrained_token_ids(model, [i for i in range(old_size)]))
    fresh = [i for i in ids if i >= old_size or i in untrained]
    if not fresh:
        return []
    trained_mask = torch.ones(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    trained_mask[old_size:] = False
    trained_mask[sorted(untrained)] = False
    matrices = [model.get_input_embeddings().weight]
    if not _outputs_tied(model):
        matrices.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for weight in matrices:
            mean = weight[trained_mask].float().mean(dim=0)
            for i in fresh:
                if init == "mean":
                    row = mean
                else:
                    source = [j for j in _description_ids(tokenizer, i, descriptions) if trained_mask[j]]
                    row = weight[source].float().mean(dim=0) if source else mean
                weight[i] = row.to(weight.dtype)
    return fresh


def trainable_token_config(ids: Sequence[int]) -> dict:
    """Keyword arguments for `peft.LoraConfig` (and the other PEFT configs that accept them) that train exactly
    the embedding rows `ids` besides the adapter.

    `trainable_token_indices` trains a sparse delta on those rows only. With tied input/output embeddings (Gemma,
    SmolLM2) peft 0.21.2 ties the delta to lm_head as well (tests/test_models.py checks that after training the
    rows changed in both and every other row did not). `modules_to_save=["embed_tokens"]` would instead copy and
    train the whole matrix (262k x 640 for Gemma: 168M parameters) and unties lm_head: avoid it.
    """
    ids = sorted({int(i) for i in ids})
    return {"trainable_token_indices": ids} if ids else {}
