"""`tooltune pretrain corpus --out FILE`: write the default pre-training corpus, one document per line."""

from __future__ import annotations

from tooltune.pretrain.corpus import build_corpus, write_corpus

HELP = "write the domain corpus (CrossWOZ, hotel dialogues from train only, hotel DB) one document per line"


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="the text file to write")
    parser.add_argument("--data-dir", help="the data dir (default: $TOOLTUNE_DATA or ../shared/data)")


def run(args) -> int:
    documents, report = build_corpus(args.data_dir)
    out = write_corpus(documents, args.out)
    for line in report.lines():
        print(f"# {line}")
    print(out)
    return 0
