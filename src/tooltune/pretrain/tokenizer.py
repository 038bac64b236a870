"""A byte-level BPE tokenizer trained on the domain corpus, saved as a `PreTrainedTokenizerFast` folder.

Byte-level: every string (Chinese, JSON, digits) encodes without an unknown token, as GPT-2's does. The GPT-2
pre-tokenizer keeps a run of Chinese characters together, so merges learn whole hotel names, facilities and
phrases ("叫醒服务", "价格") as pieces: the "domain BPE" lever of issue 7. The role tokens of the ChatGLM3-style
format and bos/eos/pad are special tokens: each is one id and is never split or merged with text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tooltune.errors import ToolTuneError
from tooltune.jsonio import staged_directory

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
BYTE_ALPHABET = 256


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train the domain tokenizer."""

    vocab_size: int = 8000
    """Total vocabulary: 256 byte tokens, the special tokens, and the merges learnt."""
    min_frequency: int = 2
    """A pair must occur this often in the corpus to be merged (1 would learn one-off strings)."""

    def __post_init__(self) -> None:
        smallest = BYTE_ALPHABET + len(special_tokens())
        if self.vocab_size < smallest:
            raise ToolTuneError(f"--vocab-size {self.vocab_size} is too small: a byte-level BPE with "
                                f"{len(special_tokens())} special tokens needs at least {smallest}")
        if self.min_frequency < 1:
            raise ToolTuneError(f"min_frequency must be at least 1, got {self.min_frequency}")


def special_tokens() -> list[str]:
    """Special tokens in id order: pad=0, bos=1, eos=2, then the role tokens."""
    return [PAD, BOS, EOS, *ROLE_TOKENS]


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig = TokenizerConfig()):
    """A `PreTrainedTokenizerFast` trained on `texts` (documents)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=config.min_frequency,
                                  special_tokens=special_tokens(),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   extra_special_tokens=list(ROLE_TOKENS))


def save_tokenizer(tokenizer, out: str | Path) -> Path:
    """Save as a folder that `AutoTokenizer.from_pretrained(out)` loads."""
    out = Path(out)
    with staged_directory(out) as staging:  # no half-saved tokenizer folder for a later step to load
        tokenizer.save_pretrained(staging)
    return out
