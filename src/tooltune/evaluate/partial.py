"""`predictions.partial.jsonl`: an evaluation's rows as they are generated, so that nothing done is lost.

`tooltune eval` appends each generated batch's rows here (flushed and synced), and at the end writes
`predictions.jsonl` and `metrics.json` atomically and removes this file. `eval --resume` reads it back and generates
only what is missing. Layout: a header line `{"tooltune_eval": SETTINGS}` (what decides the outputs: run, data, format,
batch size, ...; a resume must ask for the same), then one row a line in `predictions.jsonl`'s form, in the order
they were generated. A kill can cut the last line short: that line is dropped on resume (and said), its rows redone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tooltune import jsonio
from tooltune.dialogue import turn_to_seed
from tooltune.errors import InputError
from tooltune.evaluate.predictions import Row, row_from_json, row_to_json

PARTIAL_FILE = "predictions.partial.jsonl"
HEADER_KEY = "tooltune_eval"


class PartialPredictions:
    """The partial file of one evaluation directory, open for appending rows."""

    def __init__(self, directory: str | os.PathLike, settings: Mapping[str, Any]):
        self.path = Path(directory) / PARTIAL_FILE
        self.settings = dict(settings)
        self._file = None

    def resume(self, golds: Mapping[str, Any]) -> tuple[dict[str, Row], int]:
        """The rows already written ({id: row}) and how many cut-short lines were dropped; `golds` maps every unit
        id of this evaluation to its gold turn, to refuse a file written for other data. No file: nothing done."""
        if not self.path.exists():
            return {}, 0
        data = jsonio.read_bytes(self.path)
        lines = data.split(b"\n")
        complete = lines[:-1]  # what follows the last newline was cut short by a kill (or is empty)
        dropped = int(bool(lines[-1].strip()))
        if not complete:
            return {}, dropped
        where = f"{self.path}:1"
        header = jsonio.loads(jsonio.decode_utf8(complete[0], where), where)
        if not isinstance(header, dict) or not isinstance(header.get(HEADER_KEY), dict):
            raise InputError(f"not a tooltune partial predictions file (no {HEADER_KEY!r} header)", where=where)
        self._check_settings(header[HEADER_KEY], where)
        rows: dict[str, Row] = {}
        for lineno, raw in enumerate(complete[1:], start=2):
            where = f"{self.path}:{lineno}"
            if not raw.strip():
                continue
            row = row_from_json(jsonio.loads(jsonio.decode_utf8(raw, where), where), where)
            if row.id not in golds:
                raise InputError(f"unit {row.id!r} is not one of this evaluation's units (another --data or "
                                 f"--split?)", where=where, field="id")
            if turn_to_seed(row.gold) != turn_to_seed(golds[row.id]):
                raise InputError(f"the gold turn of unit {row.id!r} is not this data's", where=where, field="gold")
            rows[row.id] = row
        return rows, dropped

    def _check_settings(self, written: Mapping[str, Any], where: str) -> None:
        for key in sorted(set(written) | set(self.settings)):
            if written.get(key) != self.settings.get(key):
                raise InputError(f"--resume needs the same settings as the interrupted evaluation: {key} was "
                                 f"{written.get(key)!r}, now {self.settings.get(key)!r}", where=where,
                                 field=f"{HEADER_KEY}.{key}")

    def open(self, rows: Iterable[Row]) -> None:
        """Start the file afresh with the header and `rows` (those kept from before), written atomically; then
        appends go to it."""
        lines = [jsonio.dumps({HEADER_KEY: self.settings})] + [jsonio.dumps(row_to_json(r)) for r in rows]
        jsonio.atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, rows: Sequence[Row]) -> None:
        """Append `rows` in one write, flushed and synced: after a kill they are on disk or (cut short) redone."""
        assert self._file is not None, "open() first"
        self._file.write("".join(jsonio.dumps(row_to_json(r)) + "\n" for r in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, finished: bool) -> None:
        """Close the file; `finished`: the final files are written, so the partial file goes."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if finished:
            self.path.unlink(missing_ok=True)
