"""`tooltune export RUN --merge OUT`."""

from __future__ import annotations

HELP = "merge a training run's adapter into its base model and write a Hugging Face model directory"


def configure(parser) -> None:
    parser.add_argument("run", help="run directory written by `tooltune train`")
    parser.add_argument("--merge", required=True, metavar="OUT", help="directory to write the merged model to")
    parser.add_argument("--base", help="base model directory, when it moved since training (default: from the run)")


def run(args) -> int:
    from tooltune.train.export import merge

    print(f"merged model written to {merge(args.run, args.merge, args.base)}")
    return 0
