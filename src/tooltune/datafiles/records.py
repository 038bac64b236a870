"""Reading JSON records out of files and writing them back atomically; no format knowledge here.

A record is one JSON value with the place it came from (`path:line` for JSON Lines, `path:[i]` for an item of a
JSON array file, `path` for a file that is one record). Every format module reads and writes records; this module
owns the file layout, so that a format is only a mapping between records and `Dialogue`s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tooltune import jsonio
from tooltune.errors import InputError

Record = tuple[str, Any]
"""(where, value): where is `path:line`, `path:[i]` or `path`. A line or file that is not JSON comes as an
`InputError` value, so that the caller decides whether it fails the read or is skipped and counted."""


def iter_records(path: Path, document_is_record: bool = False) -> Iterator[Record]:
    """The records of a file, or of every `*.json` file of a directory in name order.

    A `.json` file is one JSON document: a list is a list of records, anything else one record. With
    `document_is_record` (the seed format) a list whose items are objects is itself the one record (a dialogue),
    while a list of lists is many. Any other file is JSON Lines (blank lines skipped). A `.json` file that holds
    JSON Lines (several values) is read as JSON Lines too.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise InputError("the directory holds no *.json files", where=str(path))
        for file in files:
            yield from iter_records(file, document_is_record)
        return
    data = jsonio.read_bytes(path)
    if path.suffix == ".json":
        text = jsonio.decode_utf8(data, str(path))
        try:
            value = jsonio.loads(text, str(path), line=1)
        except InputError as e:
            if "extra data" not in e.message:  # not several values: a broken document, report it where it broke
                yield str(path), e
                return
        else:
            yield from _document_records(path, value, document_is_record)
            return
    yield from _jsonl_records(path, data)


def _document_records(path: Path, value: Any, document_is_record: bool) -> Iterator[Record]:
    if not isinstance(value, list):
        yield str(path), value
    elif document_is_record and all(isinstance(item, dict) for item in value):
        yield str(path), value
    else:
        for i, item in enumerate(value):
            yield f"{path}:[{i}]", item


def _jsonl_records(path: Path, data: bytes) -> Iterator[Record]:
    for lineno, line in jsonio.jsonl_lines(path, data):
        where = f"{path}:{lineno}"
        if isinstance(line, InputError):
            yield where, line
            continue
        try:
            value = jsonio.loads(line, where)
        except InputError as e:
            value = e
        yield where, value


def read_jsonl(path: str | os.PathLike, text: str | None = None) -> Iterator[Record]:
    """(`path:line`, value) for every non-blank line of a JSON Lines file (or of `text` read from it); a line that
    is not JSON raises `InputError` there. The one strict JSONL reader (it splits on "\\n" only, see
    `jsonio.jsonl_lines`)."""
    path = Path(path)
    data = jsonio.read_bytes(path) if text is None else text.encode("utf-8", "surrogatepass")
    for where, value in _jsonl_records(path, data):
        if isinstance(value, InputError):
            raise value
        yield where, value


def first_record(path: Path) -> Record | None:
    """The first record of `path` (for format detection), or None for an empty file or directory.

    A `.json` file holding a list gives its first item: a record of a list of records, or the first turn of
    a seed dialogue.
    """
    try:
        return next(iter_records(path, document_is_record=False))
    except StopIteration:
        return None


dumps = jsonio.dumps


def write_jsonl_atomic(values: Iterable[Any], path: Path) -> int:
    """Write one JSON value a line to a temporary file beside `path`, then rename it over `path`.

    An error while producing `values` leaves `path` as it was (no half-written output). Returns the line count.
    """
    count = 0
    with jsonio.atomic_writer(path) as f:
        for value in values:
            f.write(dumps(value) + "\n")
            count += 1
    return count


def write_text_atomic(text: str, path: Path) -> None:
    jsonio.atomic_write_text(path, text)


def write_dir_atomic(files: Iterable[tuple[str, str]], path: Path) -> int:
    """Write (name, text) files into a new directory built beside `path` and renamed to it at the end.

    `path` must not exist or be an empty directory: files from an earlier run must not mix with these.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError("output directory exists and is not empty", where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    count = 0
    try:
        for name, text in files:
            (tmp / name).write_text(text, encoding="utf-8")
            count += 1
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count
