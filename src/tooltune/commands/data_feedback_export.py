"""`tooltune data feedback export --db PATH --out FILE`: the bot's stored conversations as dialogues to train on (with
their turn labels), conversations to annotate (seed JSONL + Label Studio tasks) and a report (markdown)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tooltune.datafiles import write_dialogues
from tooltune.datafiles.records import write_jsonl_atomic
from tooltune.errors import InputError
from tooltune.feedback import default_path, read_conversations
from tooltune.feedback.export import export, label_rows, label_studio_tasks, report
from tooltune.jsonio import atomic_write_text

HELP = "export stored conversations and feedback: corrected and confirmed turns as training dialogues, thumbs-down " \
       "turns as annotation tasks, and a report"

SIDE_FILES = (("labels", ".labels.jsonl"), ("annotate", ".to_annotate.jsonl"), ("label_studio", ".label_studio.json"),
              ("report", ".report.md"))
"""The files written beside --out unless given: (option, suffix replacing OUT's)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="the feedback database serve and chat wrote (default: feedback.sqlite in the user "
                                     "cache, their default)")
    parser.add_argument("--out", required=True,
                        help="training dialogues, seed JSONL: corrected turns as gold labels, confirmed turns, and the "
                             "turns before them (trains with `tooltune train`; `data build --exclude` takes it)")
    parser.add_argument("--labels", help="each training dialogue's turns: corrected, confirmed or unreviewed, by the "
                                         "model or the client (JSONL, line k for dialogue k; default OUT.labels.jsonl)")
    parser.add_argument("--annotate", help="conversations with a thumbs-down turn and no correction, for annotators "
                                           "(seed JSONL, the `--sent` file of `data merge-annotations`; default "
                                           "OUT.to_annotate.jsonl)")
    parser.add_argument("--label-studio", help="the same as Label Studio tasks, as `data select` writes them "
                                               "(default OUT.label_studio.json)")
    parser.add_argument("--report", help="turns by feedback, per slot key and per run (markdown; default "
                                         "OUT.report.md)")
    parser.add_argument("--batch", default="feedback", help="batch name written into the Label Studio tasks")


def beside(out: Path, suffix: str) -> Path:
    """`out` with its extension replaced: fb.jsonl -> fb.labels.jsonl."""
    return out.with_name((out.name[:-len(out.suffix)] if out.suffix else out.name) + suffix)


def run(args: argparse.Namespace) -> int:
    import json

    db = Path(args.db) if args.db else default_path()
    out = Path(args.out)
    if args.out.endswith(("/", "\\")) or out.is_dir():
        raise InputError("a directory; give a file (seed JSONL)", where=args.out, field="--out")
    files = {"out": out} | {name: Path(getattr(args, name)) if getattr(args, name) else beside(out, suffix)
                            for name, suffix in SIDE_FILES}
    seen: dict[Path, str] = {}
    for name, path in files.items():
        other = seen.setdefault(path.resolve(), name)
        if other != name:
            raise InputError(f"the same file as --{other.replace('_', '-')}", where=str(path),
                             field=f"--{name.replace('_', '-')}")
    conversations = read_conversations(db)
    result = export(conversations, str(db))
    write_dialogues([t.dialogue for t in result.train], out, "seed")
    write_jsonl_atomic(label_rows(result), files["labels"])
    write_dialogues([a.dialogue for a in result.annotate], files["annotate"], "seed")
    atomic_write_text(files["label_studio"], json.dumps(label_studio_tasks(result, args.batch), ensure_ascii=False,
                                                        indent=1))
    written = [f"{len(result.train)} dialogues to train on to {out}, their labels to {files['labels']}",
               f"{len(result.annotate)} conversations to annotate to {files['annotate']} and {files['label_studio']}"]
    atomic_write_text(files["report"], report(conversations, result, str(db), written))
    for line in written + [f"the report to {files['report']}"]:
        print(f"wrote {line}")
    if not result.train:
        print("note: no conversation has a corrected or confirmed turn before a cut, so there is nothing to train on")
    return 0
