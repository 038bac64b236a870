"""`tooltune chat RUN`: chat with a trained model in the terminal; its searches run on the local hotel database."""

from __future__ import annotations

import argparse
import sys

from tooltune.db import HotelDB
from tooltune.dialogue import MAX_NEW_TOKENS
from tooltune.errors import InputError, ToolTuneError
from tooltune.feedback import FeedbackStore, default_path

# Modules that load torch (through tooltune.bot) are imported inside the functions that use them: `tooltune --help`
# builds every subcommand's parser and should not pay for them.
HELP = "chat with a trained model in the terminal (searches run on the local hotel database)"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options `chat` and `serve` share: which model, which database, how many searches."""
    parser.add_argument("run", help="a training run directory or a saved model directory")
    parser.add_argument("--format", help="chat format (default: the run's); needed for a plain model directory")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                        help=f"tokens generated per turn at most (default {MAX_NEW_TOKENS})")
    parser.add_argument("--dtype", help="torch dtype of the weights (default: float32 on a CPU, where decoding one "
                                        "token at a time is many times faster than in bf16; else auto)")
    parser.add_argument("--domain-vocab", action="store_true",
                        help="write only tokens of the run's training data or of the prompt (as eval --domain-vocab): "
                             "the output layer computes about 2,300 of Gemma's 262,144 rows")
    parser.add_argument("--threads", type=int, help="CPU threads torch computes with (default: torch's, one per core); "
                                                  "on cores other work shares, 1 decoded 2x faster than 2")
    parser.add_argument("--constrained", action="store_true",
                        help="generate call arguments under the tool's schema (needs the 'constrained' extra)")
    parser.add_argument("--max-calls", type=int, default=3, help="searches per user turn at most (default 3)")
    parser.add_argument("--limit", type=int, default=3, help="hotels per search (default 3)")
    parser.add_argument("--db", help="database file (default: the user cache's hotels.sqlite, built if missing)")
    parser.add_argument("--data-dir", help="data dir to build the database from when it is missing or stale")
    parser.add_argument("--feedback-db", metavar="PATH",
                        help="SQLite file the conversations and their feedback go to (default: feedback.sqlite in the "
                             "user cache, beside the hotel database); read by `tooltune data feedback export`")
    parser.add_argument("--no-feedback", action="store_true",
                        help="store no conversation and take no feedback (/good /bad /fix, the page's buttons, "
                             "/v1/feedback)")


def check_numbers(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Refuse a count option that is not positive, naming it (before any slow loading)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ToolTuneError(f"--{name.replace('_', '-')} must be a positive number, not {value}")


def open_session_parts(args: argparse.Namespace):
    """(policy, database, session config) from the shared options."""
    from tooltune.bot import SessionConfig, load_policy

    check_numbers(args, ("max_new_tokens", "max_calls", "limit", "threads"))
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    config = SessionConfig(max_calls=args.max_calls, limit=args.limit)
    policy = load_policy(args.run, fmt=args.format, device=args.device, max_new_tokens=args.max_new_tokens,
                         constrained=args.constrained, dtype=args.dtype,
                         max_prompt_tokens=getattr(args, "max_prompt_tokens", 2048), domain_vocab=args.domain_vocab)
    return policy, HotelDB.open(args.db, args.data_dir), config


def open_feedback(args: argparse.Namespace):
    """The feedback store the options ask for (its path printed, so that the user knows what is kept), or None."""
    if args.no_feedback:
        if args.feedback_db:
            raise InputError("--feedback-db and --no-feedback contradict each other", field="--no-feedback")
        print("feedback: off (--no-feedback): no conversation is stored", flush=True)
        return None
    store = FeedbackStore(args.feedback_db or default_path())
    print(f"feedback: conversations and feedback are stored in {store.path} (--no-feedback turns this off)",
          flush=True)
    return store


def close_feedback(store) -> None:
    """Write what is queued and say how many completions could not be stored (counted, never silently lost)."""
    if store is None:
        return
    store.close()
    if store.failed:
        print(f"feedback: {store.failed} completions could not be stored in {store.path} (the log says why)",
              file=sys.stderr)


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)


def run_label(args: argparse.Namespace) -> str:
    """The run as the feedback store records it: its resolved path (two runs may share a folder name)."""
    from pathlib import Path

    return str(Path(args.run).resolve())


def run(args: argparse.Namespace) -> int:
    from tooltune.bot import Session
    from tooltune.bot.terminal import chat_loop

    policy, db, config = open_session_parts(args)
    store = open_feedback(args)
    try:
        chat_loop(Session(policy, db, config), sys.stdin, sys.stdout, feedback=store, run=run_label(args))
    finally:
        close_feedback(store)
    return 0
