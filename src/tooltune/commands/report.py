"""`tooltune report`: the lecture's comparison table from run directories, or a rescore of one predictions file."""

from __future__ import annotations

import argparse
import json
import sys

from tooltune.errors import ToolTuneError
from tooltune.evaluate.predictions import read_predictions

# Modules that load jieba and nltk (evaluate.report, evaluate.score) are imported inside the functions that use them:
# `tooltune --help` builds every subcommand's parser and should not pay for them.
HELP = "print the BLEU-4 / SLOT-P/R/F1 table of runs, or rescore a predictions.jsonl"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="DIR",
                        help="run directories (or their metrics.json), one table row each, in the order given")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead of aligned text")
    parser.add_argument("--extra", action="store_true",
                        help="add the columns beyond the course: valid-call rate, task success, ROUGE-L on jieba words")
    parser.add_argument("--rescore", metavar="PREDICTIONS",
                        help="recompute every metric from a predictions.jsonl alone and print them as JSON")
    parser.add_argument("--no-rouge", action="store_true", help="with --rescore: skip ROUGE (saves loading jieba)")
    parser.add_argument("--task-success", action="store_true",
                        help="with --rescore: run predicted and gold calls on the local hotel database and compare")
    parser.add_argument("--db", metavar="PATH", help="with --task-success: the SQLite hotel database to use "
                                                      "(default: the cache's, built on first use)")
    parser.add_argument("--limit", type=int, default=3,
                        help="with --task-success: how many hotels each search returns (default 3, the web demo's)")


def _rescore(args: argparse.Namespace) -> int:
    from tooltune.evaluate.score import hoteldb_search, score

    rows = read_predictions(args.rescore)
    search = hoteldb_search(args.db) if args.task_success else None
    result = score(rows, search=search, limit=args.limit, rouge=not args.no_rouge)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.rescore:
        if args.runs:
            raise ToolTuneError("give either run directories or --rescore PREDICTIONS, not both")
        return _rescore(args)
    if not args.runs:
        raise ToolTuneError("nothing to report: give run directories (DIR...) or --rescore PREDICTIONS")
    if args.no_rouge or args.task_success or args.db:
        raise ToolTuneError("--no-rouge, --task-success and --db apply to --rescore only (a table reads metrics.json)")
    from tooltune.evaluate.report import read_metrics, render_table, table_rows

    runs = [read_metrics(d) for d in args.runs]
    sys.stdout.write(render_table(table_rows(runs, extra=args.extra), markdown=args.markdown) + "\n")
    return 0
