"""Hostile inputs and the targets they are thrown at, shared by the fuzz tests and `bench/fuzz.py` (the long run).

A target takes one drawn input and exercises one reader, parser or the search; its contract is that nothing but
tooltune's own `ToolTuneError` escapes (any other exception is a traceback a user would see). Inputs are mutations of
real records (the course's dialogues in every file format, the formats' own call texts) with the snippets that broke
tooltune before (deep nesting, huge integers, lone surrogates, NaN, bytes that are not UTF-8, misspelled keys), plus
generated JSON values.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, Dialogue, Result, User, turn_to_seed
from tooltune.errors import ToolTuneError
from tooltune.datafiles import FILE_FORMATS
from tooltune.datafiles import read_file, write_dialogues
from tooltune.formats import FORMATS as CHAT_FORMATS

SAMPLE = Dialogue((User("找一家评分4.5以上的经济型酒店"),
                   Call({"type": "经济型", "rating_range_lower": 4.5, "facilities": ["无烟房"]}),
                   Result([{"name": "北京A酒店", "type": "经济型", "price": 300.0, "rating": 4.6, "hotel_id": 7,
                            "facilities": ["无烟房", "wifi"]}]),
                   Assistant("推荐北京A酒店。"), User("谢谢"), Call({"name": "北京A酒店"})))
"""A course-like dialogue: its records in each file format are what the mutations start from."""

SNIPPETS = [
    "[" * 1500, "]" * 3, "{" * 300, "9" * 5000, "9" * 150, "1e400", "-1e999", "NaN", "-Infinity", '"\\udc80"',
    "\\ud800", '"\\ud83d\\ude00"', "\\u12", '"', "\\", ",", ":", "}", "null", "true", "[]", "{}", "-0.0", "0x10",
    '"observations"', '"parameter"', '"role"', '"tool"', '"search"', '"extra": 1, ', "\u2028", "\x00", "\t", "\n",
    "😀" * 3, "酒店" * 50,
]
BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x80\x80", b"\r\n"]


def records_text(fmt: str, suffix: str) -> bytes:
    """`SAMPLE` twice, written in file format `fmt` as JSON Lines (`.jsonl`) or one JSON document (`.json`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"sample{suffix}"
        write_dialogues([SAMPLE, SAMPLE], path, fmt)
        return path.read_bytes()


@st.composite
def mutated_files(draw: Any) -> tuple[str | None, str, bytes]:
    """(format to read as, or None to detect; suffix; the file's bytes): a real file with 1 to 4 mutations."""
    fmt = draw(st.sampled_from(list(FILE_FORMATS)))
    suffix = draw(st.sampled_from([".jsonl", ".json"]))
    data = bytearray(records_text(fmt, suffix))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "bytes", "duplicate"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(SNIPPETS)).encode("utf-8", "surrogatepass")
        elif kind == "replace":
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:end] = draw(st.sampled_from(SNIPPETS) | st.text(max_size=8)).encode("utf-8", "surrogatepass")
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif kind == "bytes":
            data[at:at] = draw(st.sampled_from(BYTES) | st.binary(min_size=1, max_size=4))
        else:
            data[at:at] = data[at:at + draw(st.integers(1, 200))]
    return draw(st.sampled_from([fmt, None])), suffix, bytes(data)


# JSON-like values, including what JSON cannot carry safely: lone surrogates, NaN, huge integers
HOSTILE_TEXT = st.text(max_size=10) | st.sampled_from(["\udc80", "a\ud800b", "observation", "role", "search"])
HOSTILE_SCALAR = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400) | st.floats()
                  | HOSTILE_TEXT)
HOSTILE_VALUE = st.recursive(HOSTILE_SCALAR, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=8)


@st.composite
def generated_records(draw: Any) -> tuple[str | None, str, bytes]:
    """A JSON Lines file of generated values shaped like records of some format (keys from the formats)."""
    keys = st.sampled_from(["role", "content", "tools", "conversations", "messages", "context", "response", "from",
                            "value", "name", "parameters", "observation", "arguments", "records", "tool_calls",
                            "tool_call_id", "function", "type", "id"]) | HOSTILE_TEXT
    record = st.recursive(HOSTILE_SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
    lines = draw(st.lists(record, min_size=1, max_size=3))
    text = "\n".join(_dump(v) for v in lines) + "\n"
    return draw(st.sampled_from([*FILE_FORMATS, None])), ".jsonl", text.encode("utf-8", "surrogatepass")


def _dump(value: Any) -> str:
    try:
        return json.dumps(value)  # ensure_ascii: lone surrogates become \\udc80 escapes, as a hostile file has them
    except (ValueError, OverflowError):  # an integer too long for Python's own str()
        return "9" * 5000


def read_target(case: tuple[str | None, str, bytes], directory: Path) -> int:
    """Read a file, and write what was read in every format and read that back: how many dialogues were read.
    Raises only `ToolTuneError` (for the file read; the writes and the re-reads must not fail at all)."""
    fmt, suffix, data = case
    path = directory / f"in{suffix}"
    path.write_bytes(data)
    report = read_file(path, fmt, skip_invalid=bool(len(data) % 2))
    for out_fmt in FILE_FORMATS:
        out = directory / f"out.{out_fmt}.jsonl"
        write_dialogues(report.dialogues, out, out_fmt)
        if report.dialogues and out_fmt != "llama2":  # llama2 keeps only what precedes the last target
            try:
                again = read_file(out, out_fmt).dialogues
            except ToolTuneError as e:
                raise AssertionError(f"what tooltune wrote it cannot read back: {e}") from None
            assert [[turn_to_seed(t) for t in d.turns] for d in again] == \
                [[turn_to_seed(t) for t in d.turns] for d in report.dialogues]
    return len(report.dialogues)


# ---- parsers of generated text --------------------------------------------------------------------------------

LITERALS = ["{1, 2}", "b'x'", "1j", "-2j", "...", "(1, 2)", "9" * 5000, "9" * 150, "'\\udc80'", "1e999", "-1e999",
            "[" * 400 + "]" * 400, "{'a': {1}}", "{1: 'x'}", "None", "True", "'经济型'", "4.5", "[1, [2, [3]]]",
            "frozenset()", "__import__('os')", "'a' 'b'", "-(1)", "+1", "0b101", "1_000"]


@st.composite
def generated_texts(draw: Any) -> tuple[str, str]:
    """(chat format, a model's output): a format's own call text, mutated or with hostile literals, or any text."""
    name = draw(st.sampled_from(list(CHAT_FORMATS)))
    fmt = CHAT_FORMATS[name]
    kind = draw(st.sampled_from(["call", "literal", "json", "text"]))
    if kind == "text":
        return name, draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
    key = draw(st.sampled_from(["type", "name", "facilities", "price_range_upper", "x"]))
    if kind == "literal":
        return name, f"search_hotels\n```python\ntool_call({key}={draw(st.sampled_from(LITERALS))})\n```"
    value = draw(st.sampled_from(SNIPPETS + LITERALS))
    if kind == "json":
        body = '{"' + key + '": ' + value + "}"
        return name, draw(st.sampled_from([f"search:\n{body}", f"search_hotels\n{body}", f"<tool_call>{body}",
                                           '<tool_call>{"name": "search_hotels", "arguments": ' + body + "}"]))
    sample = _sample_text(fmt)
    at = draw(st.integers(0, len(sample)))
    return name, sample[:at] + value + sample[at + draw(st.integers(0, 10)):]


def _sample_text(fmt: Any) -> str:
    """What a format's model writes for `SAMPLE`'s first call (its trained text), specials included."""
    try:
        pieces = fmt.render(SAMPLE, policy="last")[0]
    except Exception:  # noqa: BLE001 - a format that needs a tokenizer (chat_template) renders nothing here
        return '<tool_call>{"name": "search_hotels", "arguments": {"type": "经济型"}}</tool_call>'
    segments = [seg for seg, _ in pieces] if isinstance(pieces[0], tuple) else pieces
    return "".join(seg.text for seg in segments if seg.trainable)


def parse_target(case: tuple[str, str]) -> str:
    """Parse a model's output; the turn must be a reply or a call whose arguments are plain JSON that writes as
    UTF-8 (else predictions.jsonl could not be written). Returns the turn's kind."""
    name, text = case
    parsed = CHAT_FORMATS[name].parse(text)
    turn = parsed.turn
    assert isinstance(turn, (Call, Assistant)), turn
    if isinstance(turn, Call):
        assert jsonio.json_problem(turn.arguments) is None, (turn.arguments, text)
        assert isinstance(turn.name, str)
    jsonio.dumps(turn_to_seed(turn)).encode("utf-8")
    return "call" if isinstance(turn, Call) else "reply"


# ---- the hotel search -------------------------------------------------------------------------------------------

SEARCH_KEYS = ["name", "type", "facilities", "price_range_lower", "price_range_upper", "rating_range_lower",
               "rating_range_upper"]
LONG_TEXT = st.text(max_size=300) | st.builds(lambda n: "".join(chr(0x4E00 + i) for i in range(n)),
                                              st.integers(0, 3000)) | st.sampled_from(["酒" * 100_000, " ", ""])
SEARCH_VALUE = (HOSTILE_SCALAR | LONG_TEXT | st.lists(LONG_TEXT | HOSTILE_SCALAR, max_size=60)
                | st.sampled_from(["经济型", "豪华型", 4.5, 300, 0, 5, ["wifi", "无烟房"], ["能打国际长途"]]))
search_arguments = st.dictionaries(st.sampled_from(SEARCH_KEYS) | HOSTILE_TEXT, SEARCH_VALUE, max_size=5) | HOSTILE_VALUE


def search_target(db: Any, arguments: Any) -> int:
    """One search; only `SearchError` (a `ToolTuneError`) may escape. Returns how many records it found."""
    return len(db.search(arguments, limit=3).records)
