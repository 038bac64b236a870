"""The `tooltune` command: a table of subcommands, each a module under `tooltune.commands`.

A command module defines `HELP` (one line), `configure(parser)` and `run(args) -> int | None`; it imports heavy
libraries (torch, transformers) inside `run`, so that `tooltune --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tooltune.errors import ToolTuneError

# (words, module): `tooltune data convert ...` runs tooltune.commands.data_convert.
COMMANDS: list[tuple[str, str]] = [
    ("data convert", "data_convert"),
    ("db build", "db_build"),
    ("db search", "db_search"),
    ("eval", "eval"),
    ("report", "report"),
    ("data build", "data_build"),
    ("data fetch", "data_fetch"),
    ("data show", "data_show"),
    ("chat", "chat"),
    ("serve", "serve"),
    ("train", "train"),
    ("export", "export"),
    ("pretrain model", "pretrain_model"),
    ("model prepare", "model_prepare"),
    ("pretrain corpus", "pretrain_corpus"),
    ("pretrain tokenizer", "pretrain_tokenizer"),
    ("data balance", "data_balance"),
    ("data select", "data_select"),
    ("data merge-annotations", "data_merge_annotations"),
    ("data feedback export", "data_feedback_export"),
    ("demo", "demo"),
]


def _available() -> list[tuple[list[str], object]]:
    return [(words.split(), importlib.import_module(f"tooltune.commands.{module}")) for words, module in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tooltune", description=__import__("tooltune").__doc__)
    parser.add_argument("--version", action="version", version=f"tooltune {__import__('tooltune').__version__}")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command",
                                                                                          metavar="COMMAND")}
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for words, module in _available():
        for depth in range(1, len(words) + 1):
            key = tuple(words[:depth])
            if key in parsers:
                continue
            last = depth == len(words)
            sub = groups[key[:-1]].add_parser(key[-1], help=module.HELP if last else f"{key[-1]} commands",
                                              description=module.HELP if last else None)
            parsers[key] = sub
            if last:
                module.configure(sub)
                sub.set_defaults(_run=module.run)
            else:
                groups[key] = sub.add_subparsers(dest=f"command_{depth}", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ToolTuneError as e:
        print(f"tooltune: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tooltune db search ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("tooltune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
