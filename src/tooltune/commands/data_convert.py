"""`tooltune data convert IN OUT --to FORMAT`: convert dialogue files between the formats of `tooltune.datafiles`."""

from __future__ import annotations

import argparse
import sys
import time

from tooltune.datafiles import FILE_FORMATS, read_file, write_dialogues

HELP = "convert dialogue files between formats (seed, chatglm3, llama2, sharegpt, openai)"


def configure(parser: argparse.ArgumentParser) -> None:
    names = list(FILE_FORMATS)
    parser.epilog = "formats:\n" + "\n".join(f"  {f.name:9s} {f.description}" for f in FILE_FORMATS.values())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("input", metavar="IN", help="a file (JSON Lines or .json) or a directory of *.json")
    parser.add_argument("output", metavar="OUT",
                        help="the file to write (.jsonl: one record a line; .json: one document; a directory or a "
                             "path ending in '/': one NNNN.json per record); written atomically")
    parser.add_argument("--to", required=True, choices=names, help="the output format")
    parser.add_argument("--from", dest="source_format", choices=names,
                        help="the input format (default: detected from the first record)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid records and count them on stderr (default: stop at the first, naming it)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    read = read_file(args.input, args.source_format, skip_invalid=args.skip_invalid)
    written = write_dialogues(read.dialogues, args.output, args.to)
    seconds = time.perf_counter() - start
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731 - the summary goes to stderr, stdout stays clean
    say(f"read {len(read.dialogues)} dialogues from {args.input} ({read.format})")
    for what, n in sorted(read.counts.items()):
        say(f"  {what}: {n}")
    if read.skipped:
        say(f"  invalid records skipped: {len(read.skipped)}")
        for error in read.skipped[:10]:
            say(f"    {error}")
        if len(read.skipped) > 10:
            say(f"    ... and {len(read.skipped) - 10} more")
    say(f"wrote {written.records} records to {written.path} ({written.format}) in {seconds:.2f} s")
    for what, n in sorted(written.counts.items()):
        say(f"  {what}: {n}")
    return 0
