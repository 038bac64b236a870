"""The annotation round trip: tasks out (Label Studio import), checked dialogues back, with the lecture's sample check.

Out (`tooltune data select --label-studio FILE`): a JSON list of tasks, one per selected dialogue:
`{"data": {"line": k, "id": pool id, "batch": name, "dialogue": "<seed JSON, pretty>", "text": "<readable turns>",
"uncertainty": x, "model_output": "<greedy outputs>"}}`, `line` being the dialogue's 1-based line in the selection's
seed file. `LABEL_CONFIG` is the Label Studio labelling interface for them: the annotator corrects the seed JSON in a
text area named `dialogue` (pre-filled), and a reviewer may mark a sampled task `pass` or `fail` in `check`.

Back (`tooltune data merge-annotations`), either of:
- a Label Studio JSON export (a list of tasks, each with `data` as above and `annotations`, the last not-cancelled
  one counts): annotator = its `completed_by` (an id, or an object with `email`), the corrected dialogue = the
  `dialogue` text area (absent: unchanged), the check = the `check` choice (absent: not checked);
- JSON Lines, one object a line: `{"line": k, "annotator": str, "batch": str, "turns": [seed turns],
  "check": "pass" | "fail" (optional)}`.

The report (per annotator and per batch): dialogues, changed (corrected turns differ from what was sent), change
rate, turns edited (positions that differ, plus added or removed turns), checked, failed, fail rate. A batch whose
fail rate on the checked sample exceeds `max_fail_rate`, or (when given) whose change rate exceeds `max_change_rate`,
is rejected (返工): its dialogues are not merged and are listed. Every other dialogue is merged.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tooltune import jsonio
from tooltune.dialogue import Dialogue, dialogue_from_seed, dialogue_to_seed, turn_to_seed
from tooltune.errors import InputError
from tooltune.datafiles.records import read_jsonl

LABEL_CONFIG = """<View>
  <Header value="Correct the dialogue (seed JSON): search arguments and replies"/>
  <Text name="text" value="$text"/>
  <Text name="model_output" value="$model_output"/>
  <TextArea name="dialogue" toName="text" value="$dialogue" editable="true" rows="20" maxSubmissions="1"/>
  <Choices name="check" toName="text" choice="single">
    <Choice value="pass"/>
    <Choice value="fail"/>
  </Choices>
</View>
"""


def readable(dialogue: Dialogue) -> str:
    return "\n".join(f"{t['role']}: " + (t.get("content") or json.dumps(t.get("arguments", t.get("records")),
                                                                         ensure_ascii=False))
                     for t in dialogue_to_seed(dialogue))


def label_studio_task(line: int, dialogue: Dialogue, batch: str, uncertainty: float, model_output: str) -> dict:
    return {"data": {"line": line, "id": dialogue.id, "batch": batch,
                     "dialogue": json.dumps(dialogue_to_seed(dialogue), ensure_ascii=False, indent=1),
                     "text": readable(dialogue), "uncertainty": round(uncertainty, 4), "model_output": model_output}}


@dataclass(frozen=True)
class Annotated:
    line: int
    """1-based line of the dialogue in the selection file that was sent."""
    annotator: str
    batch: str
    dialogue: Dialogue
    check: str | None
    """`pass`, `fail`, or None when the reviewer did not sample it."""


def _dialogue(turns: Any, where: str, field_name: str) -> Dialogue:
    try:
        return dialogue_from_seed(turns, where=where)
    except InputError as e:
        raise InputError(e.message, where=where, field=f"{field_name}{'.' + e.field if e.field else ''}") from None


def _check_value(value: Any, where: str, field_name: str) -> str | None:
    if value not in (None, "pass", "fail"):
        raise InputError(f"must be pass or fail, not {value!r}", where=where, field=field_name)
    return value


def _from_label_studio(task: Any, where: str, sent: dict[int, Dialogue]) -> Annotated | None:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise InputError("a Label Studio task must be an object with `data`", where=where)
    line = task["data"].get("line")
    if not isinstance(line, int) or line not in sent:
        raise InputError(f"no dialogue {line!r} in the selection file", where=where, field="data.line")
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    ann = done[-1]
    who = ann.get("completed_by")
    annotator = str(who.get("email", who.get("id"))) if isinstance(who, dict) else str(who)
    dialogue, check = sent[line], None
    results = ann.get("result") or []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise InputError("must be a list of objects", where=where, field="annotations.result")
    for r in results:
        value = r.get("value") or {}
        if not isinstance(value, dict):
            raise InputError("must be an object", where=where, field="annotations.result.value")
        if r.get("from_name") == "dialogue" and value.get("text"):
            text = value["text"][0] if isinstance(value["text"], list) else value["text"]
            turns = jsonio.loads(text, where, "annotations.result.dialogue") if isinstance(text, str) else text
            dialogue = _dialogue(turns, where, "annotations.result.dialogue")
        elif r.get("from_name") == "check":
            check = _check_value((value.get("choices") or [None])[0], where, "annotations.result.check")
    return Annotated(line, annotator, str(task["data"].get("batch", "")), dialogue, check)


def read_annotations(path: str | Path, sent: Sequence[Dialogue]) -> tuple[list[Annotated], int]:
    """The annotated dialogues of a Label Studio export (.json) or JSON Lines file; and how many tasks had no
    annotation (not merged, counted)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", where=str(path))
    by_line = {i + 1: d for i, d in enumerate(sent)}
    text = jsonio.read_text(path)
    out, unannotated = [], 0
    if text.lstrip().startswith("["):
        tasks = jsonio.loads(text, str(path), line=1)
        if not isinstance(tasks, list):
            raise InputError("a Label Studio export is a JSON list of tasks", where=str(path))
        for i, task in enumerate(tasks):
            a = _from_label_studio(task, f"{path}: task {i + 1}", by_line)
            unannotated += a is None
            out += [a] if a else []
        return out, unannotated
    for where, obj in read_jsonl(path, text):
        if not isinstance(obj, dict):
            raise InputError("must be a JSON object", where=where)
        for key in ("line", "annotator", "batch", "turns"):
            if key not in obj:
                raise InputError("missing", where=where, field=key)
        if obj["line"] not in by_line:
            raise InputError(f"no dialogue {obj['line']!r} in the selection file", where=where, field="line")
        out.append(Annotated(obj["line"], str(obj["annotator"]), str(obj["batch"]),
                             _dialogue(obj["turns"], where, "turns"), _check_value(obj.get("check"), where, "check")))
    return out, unannotated


def turns_edited(before: Dialogue, after: Dialogue) -> int:
    """Positions whose turn differs, plus turns added or removed."""
    a, b = [turn_to_seed(t) for t in before.turns], [turn_to_seed(t) for t in after.turns]
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


@dataclass
class Group:
    dialogues: int = 0
    changed: int = 0
    turns_edited: int = 0
    checked: int = 0
    failed: int = 0

    @property
    def change_rate(self) -> float:
        return self.changed / self.dialogues if self.dialogues else 0.0

    @property
    def fail_rate(self) -> float:
        return self.failed / self.checked if self.checked else 0.0


@dataclass
class Merge:
    merged: list[Dialogue]
    annotators: dict[str, Group]
    batches: dict[str, Group]
    rejected_batches: dict[str, str] = field(default_factory=dict)
    """batch -> why."""
    counts: Counter = field(default_factory=Counter)


def merge(sent: Sequence[Dialogue], annotated: Sequence[Annotated], max_fail_rate: float,
          max_change_rate: float | None = None) -> Merge:
    """Group, check, and keep the dialogues of accepted batches (the last annotation of a line wins, counted)."""
    last: dict[int, Annotated] = {}
    counts = Counter()
    for a in annotated:
        counts["re-annotated (last kept)"] += a.line in last
        last[a.line] = a
    annotators: dict[str, Group] = {}
    batches: dict[str, Group] = {}
    for a in last.values():
        edited = turns_edited(sent[a.line - 1], a.dialogue)
        for g in (annotators.setdefault(a.annotator, Group()), batches.setdefault(a.batch, Group())):
            g.dialogues += 1
            g.changed += edited > 0
            g.turns_edited += edited
            g.checked += a.check is not None
            g.failed += a.check == "fail"
    rejected = {}
    for name, g in batches.items():
        if g.fail_rate > max_fail_rate:
            rejected[name] = f"sample check: {g.failed} of {g.checked} failed ({100 * g.fail_rate:.0f}% > " \
                             f"{100 * max_fail_rate:.0f}%)"
        elif max_change_rate is not None and g.change_rate > max_change_rate:
            rejected[name] = f"change rate {100 * g.change_rate:.0f}% > {100 * max_change_rate:.0f}%"
    merged = [a.dialogue for line, a in sorted(last.items()) if a.batch not in rejected]
    counts["merged"] = len(merged)
    counts["in rejected batches"] = len(last) - len(merged)
    counts["sent but not annotated"] = len(sent) - len(last)
    return Merge(merged, annotators, batches, rejected, counts)


def merge_report(result: Merge) -> str:
    def table(title: str, groups: dict[str, Group], status: dict[str, str] | None) -> list[str]:
        head = f"| {title} | dialogues | changed | change rate | turns edited | checked | failed | fail rate |" + \
            (" status |" if status is not None else "")
        lines = [head, "|" + " --- |" + " ---: |" * 7 + (" --- |" if status is not None else "")]
        for name in sorted(groups):
            g = groups[name]
            row = f"| {name} | {g.dialogues} | {g.changed} | {100 * g.change_rate:.1f}% | {g.turns_edited} | " \
                  f"{g.checked} | {g.failed} | {100 * g.fail_rate:.1f}% |"
            if status is not None:
                row += f" {'rejected: ' + status[name] if name in status else 'accepted'} |"
            lines.append(row)
        return lines
    out = ["## Per annotator", ""] + table("annotator", result.annotators, None)
    out += ["", "## Per batch", ""] + table("batch", result.batches, result.rejected_batches)
    out += ["", "counts: " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))]
    return "\n".join(out) + "\n"
