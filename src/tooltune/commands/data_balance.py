"""`tooltune data balance IN OUT --by slot-keys|turn-type|facility --strategy downsample|upsample|augment`."""

from __future__ import annotations

import argparse

from tooltune.curation.balance import BY, STRATEGIES, balance, balance_table
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.dataset.items import Item
from tooltune.dataset.report import plot_balance, split_stats
from tooltune.errors import InputError
from tooltune.jsonio import atomic_write_text

HELP = "rebalance a dialogue file by category (downsample, upsample or augment); before/after table and plot"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="dialogues (any format tooltune reads)")
    parser.add_argument("output", metavar="OUT", help="the rebalanced dialogues (seed JSONL unless --to)")
    parser.add_argument("--by", required=True, choices=BY, help="the categories to balance")
    parser.add_argument("--strategy", required=True, choices=STRATEGIES)
    parser.add_argument("--target", type=int, default=None,
                        help="dialogues per category to aim at (default: the mean category size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--to", default="seed", help="output file format (default: seed)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write balance.md (the table) and balance.png (before/after plot) here")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.target is not None and args.target < 1:
        raise InputError("must be at least 1", field="--target")
    dialogues = read_dialogues(args.input)
    if not dialogues:
        raise InputError("no dialogues", where=args.input)
    result = balance(dialogues, args.by, args.strategy, seed=args.seed, target=args.target)
    written = write_dialogues(result.dialogues, args.output, args.to)
    table = f"# Rebalanced {args.input} by {args.by} ({args.strategy}, seed {args.seed})\n\n" + balance_table(result)
    print(table, end="")
    print(f"wrote {written.records} dialogues to {args.output}")
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "balance.md", table)
        stats = {name: split_stats([Item(d, name, str(i)) for i, d in enumerate(ds)])
                 for name, ds in (("before", dialogues), ("after", result.dialogues))}
        plot_balance(stats, out / "balance.png")
        print(f"wrote {out / 'balance.md'} and {out / 'balance.png'}")
    return 0
