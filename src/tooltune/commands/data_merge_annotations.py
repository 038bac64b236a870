"""`tooltune data merge-annotations --sent FILE --annotations FILE --out FILE`: checked dialogues back, with a report."""

from __future__ import annotations

import argparse

from tooltune.curation.annotate import merge, merge_report, read_annotations
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.errors import InputError
from tooltune.jsonio import atomic_write_text

HELP = "merge annotated dialogues back (Label Studio export or JSONL) with a change/sample-check report per " \
       "annotator and batch"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sent", required=True, help="the selection file sent for annotation (`data select --out`)")
    parser.add_argument("--annotations", required=True,
                        help="a Label Studio JSON export, or JSONL of {line, annotator, batch, turns, check?}")
    parser.add_argument("--out", required=True, help="the merged dialogues of accepted batches (seed JSONL)")
    parser.add_argument("--append-to", metavar="FILE", default=None,
                        help="a training file: write it followed by the merged dialogues to --out instead")
    parser.add_argument("--max-fail-rate", type=float, default=0.1,
                        help="reject a batch whose sampled checks fail more often than this (default 0.1)")
    parser.add_argument("--max-change-rate", type=float, default=None,
                        help="also reject a batch that changed more than this share of its dialogues")
    parser.add_argument("--report", metavar="FILE", default=None, help="write the report (markdown) here too")


def run(args: argparse.Namespace) -> int:
    for name in ("max_fail_rate", "max_change_rate"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise InputError("must be in [0, 1]", field="--" + name.replace("_", "-"))
    sent = read_dialogues(args.sent)
    annotated, unannotated = read_annotations(args.annotations, sent)
    result = merge(sent, annotated, args.max_fail_rate, args.max_change_rate)
    base = read_dialogues(args.append_to) if args.append_to else []
    write_dialogues(base + result.merged, args.out, "seed")
    report = merge_report(result) + (f"tasks without an annotation: {unannotated}\n" if unannotated else "")
    print(report, end="")
    print(f"wrote {len(base)} + {len(result.merged)} dialogues to {args.out}")
    if args.report:
        atomic_write_text(args.report, f"# Annotations merged from {args.annotations}\n\n" + report)
    return 0
