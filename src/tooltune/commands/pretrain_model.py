"""`tooltune pretrain model --tokenizer DIR --corpus FILE --out DIR [key.path=value ...]`."""

from __future__ import annotations

# Modules that load torch (pretrain.model) are imported inside the functions that use them: `tooltune --help` builds
# every subcommand's parser and should not pay for them.
HELP = "pre-train a small GPT-2 from scratch on a text corpus (one document per line) and report dev perplexity"


def configure(parser) -> None:
    parser.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory (`tooltune pretrain "
                                                          "tokenizer` writes one)")
    parser.add_argument("--out", required=True, help="directory for the model (Hugging Face format) and run files")
    parser.add_argument("--corpus", help="training text, one document per line (sets corpus.text)")
    parser.add_argument("--dev", help="dev text (sets corpus.dev; default: every 20th training document)")
    parser.add_argument("--config", help="YAML with gpt2.*, corpus.*, train.* keys (see configs/pretrain_gpt2.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. gpt2.n_layer=6 train.max_steps=100")


def run(args) -> int:
    from tooltune.pretrain.model import load_pretrain_config, pretrain

    overrides = list(args.overrides) + [f"train.out={args.out}"]
    overrides += [f"corpus.text={args.corpus}"] if args.corpus else []
    overrides += [f"corpus.dev={args.dev}"] if args.dev else []
    info = pretrain(load_pretrain_config(args.config, overrides), args.tokenizer, resume=args.resume)
    perplexity = info.best_dev_perplexity if info.best_dev_perplexity is not None else float("nan")
    print(f"{info.parameters:,} parameters, {info.steps} steps; dev perplexity {perplexity:.2f}; model in {args.out}")
    return 0
