"""Tiny in-process models, tokenizers and examples for tests and CPU benchmarks (no model hub needed)."""

from __future__ import annotations

import random
from pathlib import Path

from tooltune.formats import IGNORE_INDEX, Example

WORDS = ("hotel room price rating wifi breakfast parking beijing cheap luxury near station search found "
         "the a is with and for under above stars yuan please book call result reply user assistant").split()


def tiny_tokenizer(texts: list[str] | None = None, vocab_size: int = 200):
    """A byte-level BPE tokenizer trained here on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = texts or [" ".join(random.Random(i).choices(WORDS, k=12)) for i in range(200)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0,
               **extra):
    """A 2-layer Llama of a few dozen dimensions, randomly initialised with `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    return LlamaForCausalLM(config)


def save_tiny_model(directory: Path, vocab_size: int = 200, seed: int = 0, **model_kwargs) -> Path:
    """A tiny Llama (`model_kwargs` go to `tiny_llama`) and its tokenizer saved as a Hugging Face model directory."""
    tokenizer = tiny_tokenizer(vocab_size=vocab_size)
    model = tiny_llama(len(tokenizer), seed=seed, **model_kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def synthetic_examples(n: int, vocab_size: int, seed: int = 0, min_len: int = 8, max_len: int = 40,
                       trained_ratio: float = 0.3) -> list[Example]:
    """Examples with a learnable target: the trained tail repeats the start of the row (a copy task)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        tail = max(1, int(length * trained_ratio))
        head = [rng.randrange(3, vocab_size) for _ in range(length - tail)]
        ids = head + [head[i % len(head)] for i in range(tail)]
        labels = [IGNORE_INDEX] * (length - tail) + ids[length - tail:]
        examples.append(Example(ids, labels))
    return examples
