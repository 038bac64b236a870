"""`tooltune data show FILE --format F`: print one dialogue as a chat format renders it, trained spans marked."""

from __future__ import annotations

import argparse
import sys

from tooltune.datafiles import read_dialogues
from tooltune.dialogue import ARGUMENT_ORDERS, AS_WRITTEN, with_argument_order
from tooltune.errors import InputError
from tooltune.formats import FORMATS, OBSERVATIONS, POLICIES, encode, ensure_special_tokens, show

HELP = "print a dialogue as a chat format renders it for training, with the trained spans highlighted"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a dialogue file (any format `tooltune data convert` reads)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="the chat format to render with")
    parser.add_argument("--policy", default="all", choices=POLICIES,
                        help="which model turns are trained: every one (all) or the last (default: all)")
    parser.add_argument("--observation", default="full", choices=OBSERVATIONS,
                        help="tool results in full (as the course) or compact (default: full)")
    parser.add_argument("--argument-order", default=AS_WRITTEN, choices=ARGUMENT_ORDERS,
                        help="calls' arguments as the data wrote them or in the tool schema's order "
                             f"(training's data.argument_order; default: {AS_WRITTEN})")
    parser.add_argument("--index", type=int, default=0, help="which dialogue of the file, from 0 (default: 0)")
    parser.add_argument("--from", dest="source_format", help="the file's format (default: detected)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="a local tokenizer directory: needed by chat_template; with it, token counts are shown")
    parser.add_argument("--color", default="auto", choices=("auto", "always", "never"),
                        help="ANSI colour for trained spans (auto: on a terminal); otherwise [[...]] marks them")


def run(args: argparse.Namespace) -> int:
    dialogues = read_dialogues(args.file, args.source_format)
    if not 0 <= args.index < len(dialogues):
        raise InputError(f"--index {args.index} is out of range: the file has {len(dialogues)} dialogues",
                         where=args.file, field="index")
    dialogue = with_argument_order(dialogues[args.index], args.argument_order)
    fmt = FORMATS[args.format]
    tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
    if tokenizer is not None:
        fmt = fmt.for_tokenizer(tokenizer)
        added = ensure_special_tokens(tokenizer, fmt.special_tokens)
        if added:
            print(f"# added {len(added)} special tokens to the tokenizer: {list(fmt.special_tokens)}", file=sys.stderr)
    elif args.format == "chat_template":
        raise InputError("the chat_template format needs --tokenizer DIR (its template renders the text)",
                         field="tokenizer")
    color = args.color == "always" or args.color == "auto" and sys.stdout.isatty()
    samples = fmt.render(dialogue, policy=args.policy, observation=args.observation)
    where = dialogue.where or f"{args.file}[{args.index}]"
    for k, sample in enumerate(samples, start=1):
        counts = ""
        if tokenizer is not None:
            ex = encode(sample, tokenizer)
            counts = f", {len(ex.input_ids)} tokens, {ex.trained_tokens} trained"
        print(f"##### {where} sample {k}/{len(samples)} ({args.format}, policy={args.policy}, "
              f"observation={args.observation}{counts})")
        print(show(sample, color=color))
    return 0


def _tokenizer(path: str):
    from pathlib import Path

    if not Path(path).is_dir():
        raise InputError("not a directory", where=path, field="tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load a tokenizer: {e}", where=path, field="tokenizer") from None
