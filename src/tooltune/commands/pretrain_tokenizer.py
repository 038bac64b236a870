"""`tooltune pretrain tokenizer [--corpus FILE...] --vocab-size N --out DIR`: train the domain byte-level BPE."""

from __future__ import annotations

from tooltune.errors import ToolTuneError
from tooltune.pretrain.corpus import build_corpus, read_corpus, write_corpus
from tooltune.pretrain.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer

HELP = "train a byte-level BPE (role tokens as special tokens) on corpus files or the default domain corpus"


def configure(parser) -> None:
    parser.add_argument("--corpus", nargs="+", metavar="FILE",
                        help="text files, one document per line (default: the corpus `pretrain corpus` writes)")
    parser.add_argument("--vocab-size", type=int, required=True, help="total vocabulary size (bytes + specials "
                        "+ merges)")
    parser.add_argument("--min-frequency", type=int, default=2, help="least count of a pair to merge (default 2)")
    parser.add_argument("--out", required=True, help="the tokenizer folder to write (AutoTokenizer loads it)")
    parser.add_argument("--write-corpus", metavar="FILE", help="also write the default corpus to FILE")
    parser.add_argument("--data-dir", help="the data dir for the default corpus")


def run(args) -> int:
    config = TokenizerConfig(vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    if args.corpus:
        if args.write_corpus:
            raise ToolTuneError("--write-corpus writes the default corpus; it cannot go with --corpus")
        texts = read_corpus(args.corpus)
        print(f"# {len(texts)} documents from {len(args.corpus)} file(s)")
    else:
        documents, report = build_corpus(args.data_dir)
        for line in report.lines():
            print(f"# {line}")
        if args.write_corpus:
            print(f"# corpus written to {write_corpus(documents, args.write_corpus)}")
        texts = [d.text for d in documents]
    if not texts:
        raise ToolTuneError("the corpus is empty: nothing to train the tokenizer on")
    tokenizer = train_tokenizer(texts, config)
    out = save_tokenizer(tokenizer, args.out)
    print(f"# vocabulary {len(tokenizer)} (asked {config.vocab_size}; fewer means the corpus ran out of pairs "
          f"seen {config.min_frequency}+ times)")
    print(out)
    return 0
