"""Dialogue files: one table of formats, each a reader and a writer between JSON records and `Dialogue`s.

    read_dialogues(path, fmt=None) -> list[Dialogue]       # fmt None: detected from the first record
    write_dialogues(dialogues, path, fmt) -> WriteReport     # atomic: a temp file renamed at the end

`read_file` / `write_dialogues` return reports that count everything a format dropped, merged or could not
represent (e.g. the ChatGLM3 filler turns), so that the CLI can say it. Each format is a module with `NAME`,
`DESCRIPTION`, `looks_like(record)`, `read(records, report)` and `write(dialogues, counts)`; add a module to
`FILE_FORMATS` and the detection, the CLI choices and the round-trip tests pick it up.

File layout (any format): a directory is its `*.json` files in name order; a `.json` file is one JSON document
(a list of records, or for the seed format one dialogue as a list of turns); anything else is JSON Lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tooltune.dialogue import Dialogue
from tooltune.errors import InputError
from tooltune.datafiles import chatglm3, llama2, openai, records, seed, sharegpt


@dataclass
class ReadReport:
    """What reading one path gave: the dialogues, the invalid records skipped, and counted repairs."""

    format: str
    """The format name the file was read as (detected or given)."""
    skip_invalid: bool = False
    """False: the first invalid record raises its `InputError`. True: it is kept in `skipped` and reading goes on."""
    dialogues: list[Dialogue] = field(default_factory=list)
    skipped: list[InputError] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    """Things a reader dropped or merged on purpose, by what they are: {"filler turns dropped": 1960}."""

    def reject(self, error: InputError) -> None:
        if not self.skip_invalid:
            raise error
        self.skipped.append(error)


@dataclass
class WriteReport:
    format: str
    path: Path
    records: int
    """Lines (JSON Lines), items (a .json document) or files (a directory) written."""
    counts: Counter = field(default_factory=Counter)
    """What the format added or could not represent: {"filler turns inserted": 1960, "trailing turns lost": 3}."""


@dataclass(frozen=True)
class FileFormat:
    name: str
    description: str
    looks_like: Callable[[Any], bool]
    """True when one record (a parsed JSON value) is of this format; detection asks the formats in table order."""
    read: Callable[[Iterable[records.Record], ReadReport], None]
    """Append the dialogues of `records` to `report.dialogues`, passing each invalid one to `report.reject`."""
    write: Callable[[list[Dialogue], Counter], Iterator[Any]]
    """The records (JSON values) that hold `dialogues`, counting what is added or lost in `counts`."""
    document_is_record: bool = False
    """A `.json` file holding one list of objects is one record (the seed format's one dialogue per file)."""


def _format(module: ModuleType) -> FileFormat:
    return FileFormat(module.NAME, module.DESCRIPTION, module.looks_like, module.read, module.write,
                  getattr(module, "DOCUMENT_IS_RECORD", False))


FILE_FORMATS: dict[str, FileFormat] = {f.name: f for f in map(_format, (seed, chatglm3, llama2, sharegpt, openai))}
"""Every file format, by name; the CLI's --from/--to choices and the round-trip tests loop over it."""


def get_file_format(name: str) -> FileFormat:
    if name not in FILE_FORMATS:
        raise InputError(f"unknown format {name!r} (known: {', '.join(FILE_FORMATS)})", field="format")
    return FILE_FORMATS[name]


def detect_format(path: str | Path) -> str:
    """The name of the format of `path`, from its first record; an `InputError` when no format claims it."""
    path = Path(path)
    first = records.first_record(path)
    if first is None:
        raise InputError("the file is empty: cannot detect its format", where=str(path))
    where, value = first
    if isinstance(value, InputError):
        raise value
    for fmt in FILE_FORMATS.values():
        if fmt.looks_like(value):
            return fmt.name
    shape = f"an object with keys {sorted(value)}" if isinstance(value, dict) else f"a {type(value).__name__}"
    raise InputError(f"cannot detect the format: the first record is {shape}; pass the format "
                     f"(--from {'|'.join(FILE_FORMATS)})", where=where)


def read_file(path: str | Path, fmt: str | None = None, skip_invalid: bool = False) -> ReadReport:
    """Read every dialogue of `path` (a file or a directory of `*.json`), with a report of what was skipped."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", where=str(path))
    form = get_file_format(fmt) if fmt else get_file_format(detect_format(path))
    report = ReadReport(form.name, skip_invalid)
    form.read(_valid(records.iter_records(path, form.document_is_record), report), report)
    return report


def _valid(recs: Iterable[records.Record], report: ReadReport) -> Iterator[records.Record]:
    """The records that parsed as JSON; a line that did not goes to `report.reject` (raise or skip)."""
    for where, value in recs:
        if isinstance(value, InputError):
            report.reject(value)
        else:
            yield where, value


def read_dialogues(path: str | Path, fmt: str | None = None) -> list[Dialogue]:
    """Every dialogue of `path`; the first invalid record raises an `InputError` naming file, line and field."""
    return read_file(path, fmt).dialogues


def write_dialogues(dialogues: Iterable[Dialogue], path: str | Path, fmt: str) -> WriteReport:
    """Write `dialogues` to `path` in format `fmt`, atomically (on error the old `path` is left untouched).

    `path` ending in `/` or naming an existing directory: one `NNNN.json` file per record (the raw seed layout);
    a `.json` path: one JSON document; anything else: JSON Lines.
    """
    form = get_file_format(fmt)
    dialogues = list(dialogues)
    counts: Counter = Counter()
    recs = form.write(dialogues, counts)
    out = Path(path)
    if str(path).endswith(("/", "\\")) or out.is_dir():
        n = records.write_dir_atomic(((f"{i:04d}.json", records.dumps(r, indent=4))
                                      for i, r in enumerate(recs, start=1)), out)
    elif out.suffix == ".json":
        items = list(recs)
        document = items[0] if form.document_is_record and len(items) == 1 else items
        records.write_text_atomic(records.dumps(document, indent=4), out)
        n = len(items)
    else:
        n = records.write_jsonl_atomic(recs, out)
    return WriteReport(form.name, out, n, counts)
