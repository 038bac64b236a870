"""`tooltune export RUN --merge OUT` and `tooltune export RUN --checkpoint STEP --out DIR`."""

from __future__ import annotations

HELP = ("merge a training run's adapter into its base model (a Hugging Face model directory), or turn one of its "
        "checkpoints into a run directory of its own")


def configure(parser) -> None:
    parser.add_argument("run", help="run directory written by `tooltune train`")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--merge", metavar="OUT", help="directory to write the merged model to")
    what.add_argument("--checkpoint", type=int, metavar="STEP",
                      help="the checkpoint at this optimizer step (checkpoints/step-STEP) as a run directory that "
                           "eval, chat and serve load (needs --out)")
    parser.add_argument("--out", help="with --checkpoint: the run directory to write")
    parser.add_argument("--base", help="base model directory, when it moved since training (default: from the run)")


def run(args) -> int:
    from tooltune.errors import ToolTuneError
    from tooltune.train.export import checkpoint_run, merge

    if args.checkpoint is not None:
        if not args.out:
            raise ToolTuneError("--checkpoint needs --out (the run directory to write)")
        if args.base:
            raise ToolTuneError("--base goes with --merge; a checkpoint is loaded onto the run's own base")
        print(f"checkpoint step-{args.checkpoint} written as a run to {checkpoint_run(args.run, args.checkpoint, args.out)}")
        return 0
    if args.out:
        raise ToolTuneError("--out goes with --checkpoint; --merge names its own output directory")
    print(f"merged model written to {merge(args.run, args.merge, args.base)}")
    return 0
