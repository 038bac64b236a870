"""Base models: load by path, GGUF file or alias (`load_base`), convert GGUF once (`prepare_base`), and prepare
special-token embeddings for fine-tuning (`prepare_embeddings`, `trainable_token_config`)."""

from tooltune.models.embeddings import (prepare_embeddings, trainable_token_config, untrained_mask,
                                        untrained_token_ids)
from tooltune.models.load import load_base, prepare_base, prepared_dir
from tooltune.models.registry import ALIASES, resolve_alias

__all__ = ["ALIASES", "load_base", "prepare_base", "prepare_embeddings", "prepared_dir", "resolve_alias",
           "trainable_token_config", "untrained_mask", "untrained_token_ids"]
