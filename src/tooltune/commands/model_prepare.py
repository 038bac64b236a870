"""`tooltune model prepare NAME [--out DIR]`: convert a GGUF base model once into a plain Hugging Face folder."""

from __future__ import annotations

from tooltune.jsonio import read_json
from tooltune.models.load import PREPARED_NOTE, prepare_base
from tooltune.models.registry import ALIASES

HELP = "convert a GGUF base model (alias or .gguf file) into a trainable Hugging Face folder; print the folder"


def configure(parser) -> None:
    parser.add_argument("name", help=f"an alias ({', '.join(sorted(ALIASES))}) or a .gguf file")
    parser.add_argument("--out", help="the folder to write (default: the tooltune cache, models/<alias>)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="dtype of the saved weights (default bfloat16: half the disk, far below Q4 error)")
    parser.add_argument("--force", action="store_true", help="convert again even if the folder is prepared")


def run(args) -> int:
    folder = prepare_base(args.name, out=args.out, dtype=args.dtype, force=args.force)
    note = read_json(folder / PREPARED_NOTE)
    print(f"# {note['parameters']:,} parameters, vocab {note['vocab_size']:,}, {note['dtype']}, "
          f"converted in {note['convert_seconds']} s from {note['source']}")
    print(folder)
    return 0
