"""Pre-train a small GPT-2 from scratch on a text corpus (one document per line) with the same training loop.

Documents are tokenized, joined with the end-of-text token and cut into blocks of `corpus.block_size` tokens; every
token is a target. The dev split is a separate file or every n-th document. Dev perplexity = exp(dev loss per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tooltune import jsonio
from tooltune.errors import InputError, ToolTuneError
from tooltune.rundir import PRETRAIN_KIND, RunInfo
from tooltune.formats import Example
from tooltune.train.config import (DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig, apply_override,
                                   build_dataclass, check_field)
from tooltune.train.loop import run_training


@dataclass(frozen=True)
class GPT2Size:
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 128
    """Hidden size."""
    n_head: int = 4
    """Attention heads (must divide n_embd)."""

    def __post_init__(self):
        for key in ("n_layer", "n_embd", "n_head"):
            check_field(getattr(self, key) > 0, f"gpt2.{key}", "must be positive")
        check_field(self.n_embd % self.n_head == 0, "gpt2.n_head", f"must divide gpt2.n_embd ({self.n_embd})")


@dataclass(frozen=True)
class CorpusConfig:
    text: str = ""
    """Training corpus: UTF-8 text, one document per line."""
    dev: str = ""
    """Dev corpus (same form); empty: every `dev_every`-th document of `text` is held out."""
    dev_every: int = 20
    """Hold out one document in this many when `dev` is empty."""
    block_size: int = 256
    """Tokens per training row (also the model's context length)."""

    def __post_init__(self):
        check_field(self.dev_every > 1, "corpus.dev_every", "must be > 1")
        check_field(self.block_size > 1, "corpus.block_size", "must be > 1")


def _pretrain_train_defaults() -> TrainConfig:
    # The default size finishes on 2 CPU cores in well under 30 minutes (bench/results/train.md has the timing).
    return TrainConfig(lr=1e-3, batch_size=8, max_steps=400, warmup_steps=30, schedule="cosine", eval_every=100,
                       max_grad_norm=1.0, weight_decay=0.01, log_every=10, out="runs/gpt2")


@dataclass(frozen=True)
class PretrainConfig:
    gpt2: GPT2Size = field(default_factory=GPT2Size)
    """Model shape."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Text to learn from."""
    train: TrainConfig = field(default_factory=_pretrain_train_defaults)
    """The optimisation loop (the same loop as fine-tuning)."""


def load_pretrain_config(path: str | None, overrides: list[str]) -> PretrainConfig:
    import yaml
    tree: dict = {}
    if path:
        if not Path(path).is_file():
            raise InputError("config file not found", where=str(path))
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    train = {f: getattr(_pretrain_train_defaults(), f) for f in TrainConfig.__dataclass_fields__}
    tree["train"] = {**train, **(tree.get("train") or {})}
    for override in overrides:
        apply_override(tree, override)
    try:
        return build_dataclass(PretrainConfig, tree, "")
    except InputError as e:
        raise e.at(str(path)) if path else e


def read_documents(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError("corpus file not found", where=str(path))
    return [line.strip() for line in jsonio.read_text(path).splitlines() if line.strip()]


def blocks(documents: list[str], tokenizer, block_size: int) -> list[Example]:
    """Documents joined by end-of-text and cut into rows of block_size tokens (the last row may be shorter)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ToolTuneError("the tokenizer has no eos_token: pre-training needs one to separate documents")
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [eos])
    rows = [stream[s:s + block_size] for s in range(0, len(stream), block_size)]
    return [Example(row, list(row)) for row in rows if len(row) > 1]


def build_model(size: GPT2Size, vocab_size: int, block_size: int, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=size.n_embd, n_layer=size.n_layer,
                        n_head=size.n_head, bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def pretrain(cfg: PretrainConfig, tokenizer_dir: str, *, resume: bool = False) -> RunInfo:
    """Train the GPT-2 and write it (Hugging Face format, with the tokenizer) to cfg.train.out. Returns what it wrote
    to run.json."""
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    if not (Path(tokenizer_dir) / "tokenizer_config.json").is_file():
        raise ToolTuneError(f"--tokenizer {tokenizer_dir} is not a tokenizer directory (no tokenizer_config.json); "
                            f"`tooltune pretrain tokenizer` writes one")
    if not cfg.corpus.text:
        raise ToolTuneError("corpus.text is empty: give --corpus FILE (one document per line)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    docs = read_documents(cfg.corpus.text)
    if cfg.corpus.dev:
        train_docs, dev_docs = docs, read_documents(cfg.corpus.dev)
    else:
        dev_docs = docs[::cfg.corpus.dev_every]
        train_docs = [d for i, d in enumerate(docs) if i % cfg.corpus.dev_every]
    size = cfg.corpus.block_size
    train, dev = blocks(train_docs, tokenizer, size), blocks(dev_docs, tokenizer, size)
    run_cfg = RunConfig(model=ModelConfig(path=str(tokenizer_dir)), method=MethodConfig(name="full"),
                        data=DataConfig(train=cfg.corpus.text, dev=cfg.corpus.dev, max_length=cfg.corpus.block_size,
                                        group_by_length=False), train=cfg.train)
    set_seed(cfg.train.seed)
    model = build_model(cfg.gpt2, len(tokenizer), cfg.corpus.block_size, tokenizer)
    meta = RunInfo(kind=PRETRAIN_KIND, gpt2=vars(cfg.gpt2), train_documents=len(train_docs),
                   dev_documents=len(dev_docs), train_tokens=sum(len(e.input_ids) for e in train),
                   parameters=sum(p.numel() for p in model.parameters()))
    return run_training(run_cfg, model, tokenizer, train, dev, resume=resume, meta=meta).info
