"""`metrics.json` (one run's numbers plus what run it was) and the lecture's comparison table.

A run directory holds `predictions.jsonl` and `metrics.json`:
`{"model": str, "method": str, "mode": "turn"|"dialogue", ...more meta..., "metrics": score(rows)}`.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Mapping, Sequence

from tooltune.errors import InputError
from tooltune.jsonio import atomic_write_json, read_json
from tooltune.evaluate.predictions import Row
from tooltune.evaluate.score import COURSE_KEYS, score
from tooltune.evaluate.units import MODES

METRICS_FILE = "metrics.json"
REQUIRED_META = ("model", "method")

# The lecture's table (section 11.7), then the extra columns `--extra` adds: (header, path into "metrics").
COURSE_COLUMNS = (("BLEU-4", ("bleu4",)), ("SLOT-P", ("slot_p",)), ("SLOT-R", ("slot_r",)),
                  ("SLOT-F1", ("slot_f1",)))
EXTRA_COLUMNS = (("VALID-CALL", ("valid_calls", "rate")), ("TASK-OK", ("task_success", "rate")),
                 ("ROUGE-L(jieba)", ("rouge_jieba", "rouge-l")))


def write_metrics(directory: str | Path, rows: Sequence[Row], meta: Mapping[str, Any], **score_options: Any
                  ) -> dict[str, Any]:
    """Score `rows` and write `directory/metrics.json`; returns what was written.

    `meta` must name the `model` and the `method` (the table's first columns); `mode` defaults to "turn".
    `score_options` go to `score` (e.g. `search=` for task success).
    """
    missing = [k for k in REQUIRED_META if not isinstance(meta.get(k), str) or not meta.get(k)]
    if missing:
        raise InputError(f"run metadata needs a non-empty string for {missing}", field="meta")
    mode = meta.get("mode", "turn")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})", field="meta.mode")
    content = {**meta, "mode": mode, "metrics": score(rows, **score_options)}
    atomic_write_json(Path(directory) / METRICS_FILE, content)
    return content


def read_metrics(directory: str | Path) -> dict[str, Any]:
    """A run's `metrics.json`, checked for what the table needs; errors name the file and field."""
    path = Path(directory)
    if path.is_dir():
        path = path / METRICS_FILE
    content = read_json(path, "run metrics")
    if not isinstance(content, dict):
        raise InputError("expected a JSON object", where=str(path))
    for key in REQUIRED_META:
        if not isinstance(content.get(key), str):
            raise InputError("missing or not a string", where=str(path), field=key)
    metrics = content.get("metrics")
    if not isinstance(metrics, dict):
        raise InputError("missing or not an object", where=str(path), field="metrics")
    for key in COURSE_KEYS:
        if not isinstance(metrics.get(key), (int, float)) or isinstance(metrics.get(key), bool):
            raise InputError("missing or not a number", where=str(path), field=f"metrics.{key}")
    return content


def _lookup(metrics: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def table_rows(runs: Sequence[Mapping[str, Any]], extra: bool = False) -> list[list[str]]:
    """Header plus one row per run: Model | Method | BLEU-4 | SLOT-P | SLOT-R | SLOT-F1 (2 decimals, as the
    lecture prints them). A dialogue-mode run says so after its method: its numbers are not the table's kind."""
    columns = COURSE_COLUMNS + (EXTRA_COLUMNS if extra else ())
    lines = [["Model", "Method", *(header for header, _ in columns)]]
    for run in runs:
        method = run["method"] if run.get("mode", "turn") == "turn" else f"{run['method']} ({run['mode']} mode)"
        values = [_lookup(run["metrics"], path) for _, path in columns]
        lines.append([run["model"], method, *("-" if v is None else f"{v:.2f}" for v in values)])
    return lines


def _width(text: str) -> int:
    # Chinese characters take two columns in a terminal; align by display width, not by len().
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_table(lines: list[list[str]], markdown: bool = False) -> str:
    """The table as Markdown (numbers right-aligned) or as aligned plain text."""
    numeric = [False, False] + [True] * (len(lines[0]) - 2)
    if markdown:
        rule = ["---:" if num else "---" for num in numeric]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [lines[0], rule, *lines[1:]])
    widths = [max(_width(line[i]) for line in lines) for i in range(len(lines[0]))]

    def pad(cell: str, i: int) -> str:
        gap = " " * (widths[i] - _width(cell))
        return gap + cell if numeric[i] else cell + gap

    return "\n".join("  ".join(pad(cell, i) for i, cell in enumerate(line)).rstrip() for line in lines)
