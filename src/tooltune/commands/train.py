"""`tooltune train CONFIG.yaml [key.path=value ...] [--resume]`."""

from __future__ import annotations

from tooltune.errors import InputError

# Modules that load torch (train.*, curation.kfold) are imported inside the functions that use them: `tooltune --help`
# builds every subcommand's parser and should not pay for them.
HELP = "fine-tune a causal LM with one PEFT method (prompt, ptuning, prefix, lora, dora, qlora, adalora, full)"


def configure(parser) -> None:
    parser.add_argument("config", help="YAML config (see configs/); keys are field paths such as train.lr")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted overrides, e.g. method.r=16")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in train.out (same config, same process count)")
    parser.add_argument("--kfold", type=int, default=0, metavar="K",
                        help="train K folds of data.train (stratified), each holding out one part as dev; report each "
                             "fold and the mean +- std (data.dev is not used)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="with --kfold: also score slot P/R/F1 and BLEU-4 on the first N turns of each fold's dev")


def run(args) -> int:
    from tooltune.train.config import load_config
    from tooltune.train.recipe import fine_tune

    cfg = load_config(args.config, args.overrides)
    if args.kfold:
        return _kfold(cfg, args)
    info = fine_tune(cfg, resume=args.resume)
    if info.best_dev_loss is not None:
        print(f"best dev loss {info.best_dev_loss:.4f} (perplexity {info.best_dev_perplexity:.2f})")
    print(f"run directory: {cfg.train.out}")
    return 0


def _kfold(cfg, args) -> int:
    from tooltune.curation.kfold import kfold_table, train_kfold

    if args.kfold < 2:
        raise InputError("must be at least 2", field="--kfold")
    if args.resume or args.limit < 0:
        raise InputError("--kfold runs fresh folds (no --resume) and --limit must be >= 0", field="--kfold")
    result = train_kfold(cfg, args.kfold, eval_limit=args.limit)
    print(kfold_table(result), end="")
    print(f"wrote {cfg.train.out}/kfold.json and kfold.md")
    return 0
