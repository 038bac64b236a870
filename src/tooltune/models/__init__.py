"""Base models: load by path, GGUF file or alias (`load_base`), convert GGUF once (`prepare_base`), and prepare
special-token embeddings for fine-tuning (`prepare_embeddings`, `trainable_token_config`).

How a fine-tune uses it (the formats code has added its role tokens to the tokenizer):

    model, tokenizer = load_base("gemma3-270m")              # converts the GGUF once, then loads the folder
    ids = prepare_embeddings(model, tokenizer, role_tokens + [end_of_turn])   # resize + init new/untrained rows
    peft_model = get_peft_model(model, LoraConfig(target_modules=..., **trainable_token_config(ids, model)))

Without the last two steps a LoRA fine-tune of Gemma-3-270M never learns to stop: `<end_of_turn>`'s row is
untrained and LoRA on linear layers cannot move it. A full fine-tune needs only `prepare_embeddings`.
"""

from tooltune.models.embeddings import (prepare_embeddings, trainable_token_config, untrained_mask,
                                        untrained_token_ids)
from tooltune.models.load import load_base, prepare_base, prepared_dir
from tooltune.models.registry import ALIASES, resolve_alias

__all__ = ["ALIASES", "load_base", "prepare_base", "prepare_embeddings", "prepared_dir", "resolve_alias",
           "trainable_token_config", "untrained_mask", "untrained_token_ids"]
