"""`tooltune train CONFIG.yaml [key.path=value ...] [--resume]`."""

from __future__ import annotations

HELP = "fine-tune a causal LM with one PEFT method (prompt, ptuning, prefix, lora, dora, qlora, adalora, full)"


def configure(parser) -> None:
    parser.add_argument("config", help="YAML config (see configs/); keys are field paths such as train.lr")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted overrides, e.g. method.r=16")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in train.out (same config, same process count)")


def run(args) -> int:
    from tooltune.train.config import load_config
    from tooltune.train.recipe import fine_tune

    cfg = load_config(args.config, args.overrides)
    summary = fine_tune(cfg, resume=args.resume)
    if summary.get("best_dev_loss") is not None:
        print(f"best dev loss {summary['best_dev_loss']:.4f} (perplexity {summary['best_dev_perplexity']:.2f})")
    print(f"run directory: {cfg.train.out}")
    return 0
