"""The pre-training corpus: every dialogue and hotel text the data holds, minus anything from the course's dev/test.

Sources (paths relative to the data dir), one document per dialogue or per hotel:
- `crosswoz/{val,test}.json.zip`: every CrossWOZ dialogue shipped (all five domains). The course's dialogues come
  from CrossWOZ *train* (`dialog.json`), so these are other dialogues; they are still checked like the rest.
- `hotel/agiclass_hotel_chatbot/dialog.json`: the hotel sub-dialogues the course augmented.
- `hotel/raw/enhanced_hotel_data/*.json` (except files `raw/split_map.json` assigns to dev or test, or to two splits)
  and `hotel/raw/enhanced_more/*.json`.
- `hotel/v3_chatglm3_llama2/train.chatglm3.jsonl` (never `dev.*` / `test.*`).
- `crosswoz/hotel_db.json`: each hotel as its course-style record in JSON (name, address, facilities, ...).
Not read: `train.llama2.reconstructed.jsonl` (the train dialogues again, as turn samples) and
`agiclass_hotel_chatbot/hotel.json` (the same 1133 hotels again). Returned records inside dialogues are left out:
they repeat database text thousands of times.

Honest evaluation: an utterance that occurs in the course's dev or test dialogues (or in the raw files they were
made from) and not in train, and is long enough to identify a dialogue, is a *held-out fingerprint*; a document
containing one as a whole utterance is excluded, counted per source. The augmented raw dialogues and `dialog.json` share utterances with the dev/test dialogues made from them,
so without this filter the corpus would contain test text.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tooltune import jsonio, paths
from tooltune.errors import InputError
from tooltune.datafiles.records import read_jsonl
from tooltune.hotels import load_hotels

# Shorter utterances ("好的，谢谢。") recur across dialogues and identify none of them.
MIN_FINGERPRINT_CHARS = 8
HELD_OUT_SPLITS = ("dev", "test")


@dataclass(frozen=True)
class Document:
    """One line of the corpus."""

    text: str
    """The document's text on one line (utterances joined by a space)."""
    source: str
    """Where it came from: a file, and the dialogue's key or index inside it."""


@dataclass
class CorpusReport:
    """What was kept and what was excluded, per source group."""

    kept: Counter = field(default_factory=Counter)
    """Documents kept, by source group."""
    held_out: Counter = field(default_factory=Counter)
    """Documents excluded because they contain dev/test text (fingerprint or split_map), by source group."""
    duplicates: int = 0
    """Documents dropped because an identical document was already kept."""

    def lines(self) -> list[str]:
        groups = sorted(set(self.kept) | set(self.held_out))
        rows = [f"{g}: kept {self.kept[g]}, excluded as dev/test {self.held_out[g]}" for g in groups]
        return rows + [f"exact duplicates dropped: {self.duplicates}", f"total kept: {sum(self.kept.values())}"]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read_json(path: Path):
    if not path.is_file():
        raise InputError("missing data file (see `tooltune data fetch`)", where=str(path))
    return jsonio.read_json(path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise InputError("missing data file (see `tooltune data fetch`)", where=str(path))
    for where, value in read_jsonl(path):
        yield int(where.rsplit(":", 1)[1]), value


def _chatglm3_parts(conversations: list[dict]) -> tuple[list[str], list[str]]:
    """(utterances, other text) of a `*.chatglm3.jsonl` conversation: other text = the call arguments as JSON."""
    utterances, other = [], []
    for turn in conversations:
        if turn.get("role") in ("user", "assistant"):
            utterances.append(turn["content"])
        elif turn.get("role") == "tool" and turn.get("parameters"):
            # The course wrote the arguments as a Python repr; JSON is what the chat formats render.
            try:
                other.append(json.dumps(ast.literal_eval(turn["parameters"]), ensure_ascii=False))
            except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
                other.append(str(turn["parameters"]))
    return utterances, other


def _seed_parts(turns: list[dict]) -> tuple[list[str], list[str]]:
    utterances, other = [], []
    for turn in turns:
        if turn.get("role") in ("user", "assistant"):
            utterances.append(turn["content"])
        elif turn.get("role") == "search":
            other.append(json.dumps(turn.get("arguments", {}), ensure_ascii=False))
    return utterances, other


def _parts(where: str, parse, raw) -> tuple[list[str], list[str]]:
    """`parse(raw)` -> (utterances, other text), with a malformed dialogue reported as an InputError at `where`."""
    try:
        utterances, other = parse(raw)
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(f"unexpected dialogue structure ({type(e).__name__}: {e})", where=where) from None
    if not all(isinstance(u, str) for u in utterances):
        raise InputError("an utterance is not a string", where=where, field="content")
    return utterances, other


def _chatglm3_row(row: dict) -> tuple[list[str], list[str]]:
    return _chatglm3_parts(row["conversations"])


def _messages(turns: list[dict]) -> tuple[list[str], list[str]]:
    return [t["content"] for t in turns], []


def held_out_raw_files(root: Path) -> list[Path]:
    """Raw dialogues `raw/split_map.json` puts in dev or test ("dev", "test(dup-signature)", "ambiguous:dev+train")."""
    path = root / "hotel/raw/split_map.json"
    if not path.is_file():
        return []
    split_map = _read_json(path)["map"]
    return [root / "hotel/raw/enhanced_hotel_data" / name for name, split in sorted(split_map.items())
            if any(s in split for s in HELD_OUT_SPLITS)]


def held_out_fingerprints(root: Path) -> set[str]:
    """Utterances of the course's dev/test dialogues (and of the raw files they were made from) that train lacks,
    of at least MIN_FINGERPRINT_CHARS characters."""
    split = root / paths.COURSE_SPLIT

    def utterances(name: str) -> set[str]:
        path = split / f"{name}.chatglm3.jsonl"
        return {_one_line(u) for number, row in _read_jsonl(path)
                for u in _parts(f"{path}:{number}", _chatglm3_row, row)[0]}

    held = set().union(*(utterances(s) for s in HELD_OUT_SPLITS))
    # The course edited some dialogues while converting them: the raw originals hold text the jsonl lacks.
    held |= {_one_line(u) for path in held_out_raw_files(root) for u in _parts(str(path), _seed_parts,
                                                                                   _read_json(path))[0]}
    return {u for u in held - utterances("train") if len(u) >= MIN_FINGERPRINT_CHARS}


# Each source yields (group, where, utterances, other_text).
def _crosswoz(root: Path):
    for name in ("val", "test"):
        path = root / "crosswoz" / f"{name}.json.zip"
        if not path.is_file():
            continue
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                where = f"{path}!{member}"
                content = jsonio.loads(jsonio.decode_utf8(archive.read(member), where), where, line=1)
                if not isinstance(content, dict):
                    raise InputError("expected CrossWOZ's object of dialogues by id", where=where)
                for key, dialogue in content.items():
                    where = f"{path}#{key}"
                    yield ("crosswoz", where, *_parts(where, lambda d: _messages(d["messages"]), dialogue))


def _dialog_json(root: Path):
    path = root / "hotel/agiclass_hotel_chatbot/dialog.json"
    if path.is_file():
        for index, turns in enumerate(_read_json(path)):
            where = f"{path}[{index}]"
            yield ("dialog.json", where, *_parts(where, _messages, turns))


def _raw(root: Path, report: CorpusReport):
    raw = root / "hotel/raw"
    held_out = set(held_out_raw_files(root))
    for path in sorted((raw / "enhanced_hotel_data").glob("*.json")):
        if path in held_out:
            report.held_out["raw/enhanced_hotel_data"] += 1
            continue
        yield ("raw/enhanced_hotel_data", str(path), *_parts(str(path), _seed_parts, _read_json(path)))
    for path in sorted((raw / "enhanced_more").glob("*.json")):
        for index, turns in enumerate(_read_json(path)):
            where = f"{path}[{index}]"
            yield ("raw/enhanced_more", where, *_parts(where, _seed_parts, turns))


def _course_train(root: Path):
    path = root / paths.COURSE_SPLIT / "train.chatglm3.jsonl"
    for number, row in _read_jsonl(path):
        where = f"{path}:{number}"
        yield ("course train", where, *_parts(where, _chatglm3_row, row))


def _hotel_texts(root: Path) -> Iterator[Document]:
    path = root / paths.HOTEL_DB_JSON
    for record in load_hotels(path):
        yield Document(json.dumps(record, ensure_ascii=False), f"{path.name}[{record['hotel_id']}]")


def build_corpus(data_dir: str | Path | None = None) -> tuple[list[Document], CorpusReport]:
    """All documents of the default corpus, in a fixed order, with the report of what was excluded."""
    root = paths.data_dir(data_dir)
    fingerprints = held_out_fingerprints(root)
    report, seen, documents = CorpusReport(), set(), []

    def keep(group: str, document: Document) -> None:
        if document.text in seen:
            report.duplicates += 1
            return
        seen.add(document.text)
        report.kept[group] += 1
        documents.append(document)

    for source in (_crosswoz(root), _dialog_json(root), _raw(root, report), _course_train(root)):
        for group, where, utterances, other in source:
            lines = [_one_line(u) for u in utterances]
            if any(line in fingerprints for line in lines):
                report.held_out[group] += 1
                continue
            keep(group, Document(" ".join(line for line in lines + [_one_line(o) for o in other] if line), where))
    for document in _hotel_texts(root):
        keep("hotel_db.json", document)
    return documents, report


def write_corpus(documents: list[Document], out: str | Path) -> Path:
    """One document per line (UTF-8), the form `tooltune pretrain model` reads."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonio.atomic_write_text(out, "".join(d.text + "\n" for d in documents))
    return out


def read_corpus(paths_: list[str | Path]) -> list[str]:
    """Documents of corpus text files (one per line, empty lines skipped)."""
    texts = []
    for path in paths_:
        path = Path(path)
        if not path.is_file():
            raise InputError("corpus file does not exist", where=str(path))
        texts.extend(line for line in jsonio.read_text(path).splitlines() if line.strip())
    return texts
