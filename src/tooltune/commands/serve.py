"""`tooltune serve RUN`: an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/feedback) and a web chat
page at /."""

from __future__ import annotations

import argparse

from tooltune.commands.chat import (add_model_options, check_numbers, close_feedback, open_feedback, open_session_parts,
                                    run_label)
from tooltune.errors import ToolTuneError

# Modules that load torch and fastapi (bot.server) are imported inside the functions that use them: `tooltune --help`
# builds every subcommand's parser and should not pay for them.
HELP = "serve a trained model: OpenAI-compatible chat completions with tool calls, feedback, and a web chat page"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                                                            "needs --api-key)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on the API")
    parser.add_argument("--execute-tools", action="store_true",
                        help="run the model's search_hotels calls here and answer with the final reply")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="turns of concurrent requests decoded together at most (default 8)")
    parser.add_argument("--max-queue", type=int, default=32,
                        help="chat requests in progress at once; one more gets 503 with Retry-After (default 32)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20,
                        help="larger request bodies get 413 (default 1048576)")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048,
                        help="a longer prompt gets 400 context_length_exceeded (default 2048, and never more than "
                             "the model's positions less --max-new-tokens)")
    parser.add_argument("--scheduler", choices=("batch", "lock"), default="batch",
                        help="batch: concurrent turns decoded together (default); lock: one turn at a time")


def run(args: argparse.Namespace) -> int:
    from tooltune.bot.server import ServerConfig, check_bind, create_app, serve

    if not 0 < args.port < 65536:
        raise ToolTuneError(f"--port must be 1-65535, not {args.port}")
    check_bind(args.host, args.api_key)  # before loading the model: a refusal should be quick
    check_numbers(args, ("max_batch", "max_queue", "max_body_bytes", "max_prompt_tokens"))
    policy, db, session = open_session_parts(args)
    store = open_feedback(args)
    config = ServerConfig(model_name=getattr(policy, "name", "tooltune"), api_key=args.api_key,
                          execute_tools=args.execute_tools, session=session, run=run_label(args),
                          max_body_bytes=args.max_body_bytes, max_queue=args.max_queue, max_batch=args.max_batch,
                          scheduler=args.scheduler)
    try:
        serve(create_app(policy, db, config, feedback=store), args.host, args.port)
    finally:
        close_feedback(store)  # what is queued is written before the process ends
    return 0
