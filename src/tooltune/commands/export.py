"""`tooltune export RUN --merge OUT`, `--gguf OUT.gguf [--quant f16|q8_0]` and `--checkpoint STEP --out DIR`."""

from __future__ import annotations

HELP = ("merge a training run's adapter into its base model (a Hugging Face model directory, or one GGUF file for "
        "llama.cpp, Ollama and LM Studio), or turn one of its checkpoints into a run directory of its own")


def configure(parser) -> None:
    parser.add_argument("run", help="run directory written by `tooltune train`")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--merge", metavar="OUT", help="directory to write the merged model to")
    what.add_argument("--gguf", metavar="OUT.gguf",
                      help="GGUF file to write the merged model to, with the run's chat format as its chat template "
                           "and an Ollama Modelfile beside it (OUT.Modelfile)")
    what.add_argument("--checkpoint", type=int, metavar="STEP",
                      help="the checkpoint at this optimizer step (checkpoints/step-STEP) as a run directory that "
                           "eval, chat and serve load (needs --out)")
    parser.add_argument("--quant", default=None,
                        help="with --gguf: f16 (default) or q8_0 (8-bit blocks of 32, about half the size)")
    parser.add_argument("--force", action="store_true", help="with --gguf: replace OUT.gguf and its Modelfile")
    parser.add_argument("--out", help="with --checkpoint: the run directory to write")
    parser.add_argument("--base", help="base model directory, when it moved since training (default: from the run)")


def run(args) -> int:
    from tooltune.errors import ToolTuneError
    from tooltune.train.export import checkpoint_run, merge

    if args.gguf is None and (args.quant is not None or args.force):
        raise ToolTuneError(f"{'--quant' if args.quant is not None else '--force'} goes with --gguf")
    if args.checkpoint is not None:
        if not args.out:
            raise ToolTuneError("--checkpoint needs --out (the run directory to write)")
        if args.base:
            raise ToolTuneError("--base goes with --merge or --gguf; a checkpoint is loaded onto the run's own base")
        written = checkpoint_run(args.run, args.checkpoint, args.out)
        print(f"checkpoint step-{args.checkpoint} written as a run to {written}")
        return 0
    if args.out:
        raise ToolTuneError("--out goes with --checkpoint; --merge and --gguf name their own output")
    if args.gguf is not None:
        from tooltune.train.gguf_export import export_gguf

        print(f"written: {export_gguf(args.run, args.gguf, args.quant or 'f16', args.base, args.force).summary()}")
        return 0
    print(f"merged model written to {merge(args.run, args.merge, args.base)}")
    return 0
