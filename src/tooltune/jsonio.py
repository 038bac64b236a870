"""The one way tooltune reads JSON, and the one way it writes a file that a later step reads.

Reading: `loads(text, where)` and `read_json(path)` give a JSON value or raise `InputError` naming file, line and
field, whatever the input: bad syntax, nesting deeper than `MAX_DEPTH`, integers of more than `MAX_INT_DIGITS`
digits, numbers out of float range (`1e400`, `NaN`, `Infinity`), strings holding a lone surrogate (`"\\udc80"`: no
UTF-8 file can hold it, so writing it back would fail later), bytes that are not UTF-8. Python's `json` lets the
first three through as `RecursionError`/`ValueError` and the last two as values that break a later step.
`json_problem(value)` applies the same rules to a value from elsewhere (a model's `tool_call(...)` read by
`ast.literal_eval`, which also yields sets, bytes, complex numbers and `...`).

Writing: `atomic_write_text` / `atomic_write_json` write a temporary file beside the target and rename it over the
target, so a reader sees the old file or the new one, never half of one (a kill, a full disk, an error midway).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tooltune.errors import InputError

MAX_DEPTH = 100
"""Deepest nesting of lists and objects accepted. The course's records nest 5 deep; Python's own decoder and
encoder fail near 1000, at a depth that depends on the caller's stack."""
MAX_INT_DIGITS = 100
"""Longest integer accepted (digits). Longer ones are no count or id, and cannot become a float."""

# Cheap scans of the raw text, so that the walk over a parsed value runs only when it could find something: a
# surrogate escape or character, a long run of digits or a 3-digit exponent, more brackets than the depth limit.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_MAYBE_BIG_NUMBER = re.compile(r"\d{%d}|[eE][+-]?\d{3}" % (MAX_INT_DIGITS + 1))
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_INT_LIMIT = 10**MAX_INT_DIGITS


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_constant)


def line_of(text: str, offset: int) -> int:
    """The 1-based line of character `offset` of `text`."""
    return text.count("\n", 0, max(0, offset)) + 1


def json_problem(value: Any) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first part of `value` that is not plain, bounded JSON; None when it is all
    JSON: dicts with string keys, lists, strings without lone surrogates, finite floats, integers of at most
    `MAX_INT_DIGITS` digits, booleans, None; nested at most `MAX_DEPTH` deep. Iterative: a deep value cannot
    overflow the stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:  # the path is as deep: only its start says where
            return (path[:60] + "...") if len(path) > 60 else path, f"nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) >= _INT_LIMIT:
                return path, f"an integer of more than {MAX_INT_DIGITS} digits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, f"{item} is not a finite number"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return path, f"an object key must be a string, got {type(key).__name__}"
                if _SURROGATE.search(key):
                    return path, "a key holds a lone surrogate: not valid Unicode"
                stack.append((sub, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
        else:
            return path, f"{type(item).__name__} is not a JSON value"
    return None


def scrub_surrogates(text: str) -> tuple[str, int]:
    """(`text` with each lone surrogate replaced by U+FFFD, how many were replaced): for text that must be written
    (a model's output), where refusing is not an option and the count is reported."""
    found = len(_SURROGATE.findall(text))
    return (_SURROGATE.sub("\ufffd", text), found) if found else (text, 0)


def _needs_walk(text: str) -> bool:
    return (text.count("[") + text.count("{") > MAX_DEPTH or _MAYBE_SURROGATE.search(text) is not None
            or _MAYBE_BIG_NUMBER.search(text) is not None)


def _decoder_failure(text: str, error: Exception) -> tuple[str, int]:
    """A message and a character offset for what Python's decoder raised besides JSONDecodeError."""
    if isinstance(error, RecursionError):
        return f"nested more than {MAX_DEPTH} levels deep", _depth_offset(text)
    message = str(error)
    if "integer string conversion" in message:
        found = re.search(r"\d{%d}" % (MAX_INT_DIGITS + 1), text)
        return f"an integer of more than {MAX_INT_DIGITS} digits", found.start() if found else 0
    found = re.search(r"-?(NaN|Infinity)", text)
    return f"{message} (not valid JSON)", found.start() if found else 0


def json_structure(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """The structure of JSON text (complete or not) from `start`: `(offset, character, depth after it)` for every
    bracket, brace and comma outside strings (string contents, escaped quotes included, are skipped)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            yield i, ch, depth
        elif ch in "]}":
            depth -= 1
            yield i, ch, depth
        elif ch == ",":
            yield i, ch, depth


def _depth_offset(text: str) -> int:
    """Where the nesting of `text` first goes past `MAX_DEPTH` (outside strings); 0 when it does not."""
    return next((i for i, _, depth in json_structure(text) if depth > MAX_DEPTH), 0)


def _located(where: str, line: int | None) -> str:
    return f"{where}:{line}" if line is not None else where


def decode(text: str, where: str, field: str | None = None, line: int | None = None) -> tuple[Any, int]:
    """(value, end): the JSON value at the start of `text` (no leading whitespace) and where it ends, like
    `json.JSONDecoder.raw_decode`, but any failure is an `InputError`. `line` (the line `text` starts on) makes
    `where` `where:LINE`, the line of the fault for a multi-line text."""
    def error(message: str, offset: int) -> InputError:
        return InputError(message, where=_located(where, None if line is None else line + line_of(text, offset) - 1),
                          field=field)

    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON: {e.msg} (column {e.colno})", e.pos) from None
    except (RecursionError, ValueError, MemoryError) as e:
        message, offset = _decoder_failure(text, e)
        raise error(message, offset) from None
    if _needs_walk(text[:end]):
        problem = json_problem(value)
        if problem is not None:
            path, message = problem
            located = (field or "") + ("." if field and path and not path.startswith("[") else "") + path or None
            raise InputError(message, where=_located(where, line), field=located)
    return value, end


def loads(text: str, where: str, field: str | None = None, line: int | None = None) -> Any:
    """The one JSON value `text` holds (whitespace around it allowed); `InputError` otherwise (see `decode`)."""
    start = len(text) - len(text.lstrip())
    value, end = decode(text[start:], where, field, None if line is None else line + line_of(text, start) - 1)
    rest = text[start + end:]
    if rest.strip():
        offset = start + end + len(rest) - len(rest.lstrip())
        line_at = None if line is None else line + line_of(text, offset) - 1
        column = offset - text.rfind("\n", 0, offset)
        raise InputError(f"not valid JSON: extra data after the value (column {column})",
                         where=_located(where, line_at), field=field)
    return value


def decode_utf8(data: bytes, where: str) -> str:
    """`data` as UTF-8 text; bytes that are not UTF-8 raise `InputError` at `where:LINE` with the column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at byte column {column} ({e.reason})",
                         where=f"{where}:{line}") from None


def read_bytes(path: str | os.PathLike, what: str = "") -> bytes:
    """The bytes of file `path`; `InputError` when it is missing, a directory or unreadable (`what` names the file's
    role in the message: "cannot read run metrics: no such file")."""
    path = Path(path)
    lead = f"cannot read {what}: " if what else ""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{lead}no such file", where=str(path)) from None
    except IsADirectoryError:
        raise InputError(f"{lead}a directory, not a file", where=str(path)) from None
    except OSError as e:
        raise InputError(f"{lead or 'cannot read: '}{e.strerror or e}", where=str(path)) from None


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """The UTF-8 text of `path`; `InputError` for a missing or unreadable file and for bytes that are not UTF-8."""
    return decode_utf8(read_bytes(path, what), str(path))


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """The one JSON document of file `path` (run.json, metrics.json, a checkpoint's progress.json)."""
    return loads(read_text(path, what), str(path), line=1)


def jsonl_lines(path: str | os.PathLike, data: bytes | None = None) -> Iterator[tuple[int, str | InputError]]:
    """(line number, text) of every non-blank line of a JSON Lines file; a line that is not UTF-8 comes as an
    `InputError` in place of its text, so that one bad line does not hide the others. Splits on "\\n" only:
    `str.splitlines()` also splits on U+2028, U+0085 and others, which JSON leaves unescaped inside strings."""
    data = read_bytes(path) if data is None else data
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, InputError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at byte column {e.start + 1} "
                                     f"({e.reason})", where=f"{path}:{lineno}")


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON as the course writes it: UTF-8 characters kept, Python's float repr (344.0 stays 344.0)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[Any]:
    """A text file (UTF-8) open on a temporary name beside `path`; when the block ends without error it is synced
    and renamed over `path`, so a reader (or a resumed step) finds the old file or the whole new one. On any error
    the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> None:
    """`value` as JSON (UTF-8 kept, a final newline), written atomically (see `atomic_write_text`)."""
    atomic_write_text(path, dumps(value, indent=indent) + "\n")


def check_keys(obj: dict[str, Any], known: tuple[str, ...] | list[str], where: str | None,
               field: str | None = None) -> None:
    """An `InputError` for the first key of `obj` not in `known`, naming it and the closest known key: a misspelled
    key (`observations`) would otherwise be ignored and what it holds lost without a word."""
    for key in obj:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"unknown key {key!r} ({hint}known here: {', '.join(known)})", where=where,
                             field=f"{field}.{key}" if field else str(key))


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike) -> Iterator[Path]:
    """A fresh directory beside `out` to write `out`'s files into (a model folder); when the block ends without
    error, each file is renamed into `out` (created if need be; other files already there stay), so none is ever
    seen half written. On error the staging directory is removed and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir()):
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
