"""From stored conversations to files (`tooltune data feedback export`): dialogues to train on, their labels, tasks to
annotate, and a report.

Each model turn (a call or a reply) gets a label from its feedback:
- `corrected`: a user gave the turn as it should have been (whatever the rating): a gold label;
- `confirmed`: rated good and not corrected;
- `rejected`: rated bad and not corrected: an annotator must say what it should have been;
- `unrated`.

Training dialogues (seed JSONL, one per conversation with a corrected or confirmed turn): the conversation from its
start to its last corrected or confirmed turn, corrections in place, cut at two places: before the first rejected
turn (a wrong turn must not be trained on), and right after the first corrected turn (what followed was answered
after the wrong turn: a search run with the wrong arguments, a reply to it). Labelled turns past a cut are counted in
the report, not dropped silently. Turns inside the kept span that nobody reviewed train too, as in any dialogue file
(the model's turns the user went on from, turns the client sent); the labels file says which is which, one line per
dialogue: `{"line", "conversation", "source", "runs", "turns": [{"index", "role", "label", "by"}]}` (`by`: `model`,
a turn the model wrote here, or `client`, one the client sent in its history).

Annotation (seed JSONL + a Label Studio import, the files `tooltune data select` writes): each conversation with a
rejected turn, up to its last rejected turn, as the model saw it; each task's `model_output` lists what users said
about its turns. `tooltune data merge-annotations --sent FILE --annotations EXPORT` brings them back.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from tooltune.curation.annotate import label_studio_task
from tooltune.dialogue import Assistant, Call, Dialogue, Turn, turn_to_seed
from tooltune.feedback.database import StoredConversation, StoredTurn

LABELS = ("corrected", "confirmed", "rejected", "unrated")


def label_of(stored: StoredTurn) -> str | None:
    """The turn's label (see the module doc), or None for a turn that is not the model's to write (user, result)."""
    if not isinstance(stored.turn, (Call, Assistant)):
        return None
    if stored.correction is not None:
        return "corrected"
    return {"good": "confirmed", "bad": "rejected"}.get(stored.rating or "", "unrated")


@dataclass(frozen=True)
class TrainDialogue:
    dialogue: Dialogue
    conversation: StoredConversation
    labels: tuple[dict[str, Any], ...]
    """One entry per call or reply of the dialogue: index, role, label, by."""


@dataclass(frozen=True)
class AnnotateDialogue:
    dialogue: Dialogue
    conversation: StoredConversation
    notes: str
    """What users said about its turns, for the annotator (the Label Studio task's `model_output`)."""


@dataclass
class Export:
    train: list[TrainDialogue] = field(default_factory=list)
    annotate: list[AnnotateDialogue] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    """What went where, by what it is: {"corrected turns trained": 3, "confirmed turns past a cut": 1, ...}."""


def _mark(index: int, stored: StoredTurn, label: str) -> dict[str, Any]:
    """A turn of a training dialogue: its role there (a correction may have changed it), label, and who wrote it."""
    exported = stored.correction if label == "corrected" else stored.turn
    return {"index": index, "role": turn_to_seed(exported)["role"], "label": label,
            "by": "model" if stored.by_model else "client"}


def training_span(conversation: StoredConversation) -> tuple[list[Turn], list[dict[str, Any]]]:
    """(turns, labels of its calls and replies) of the conversation's training dialogue (see the module doc); no
    turns when it has no corrected or confirmed turn before a cut."""
    turns: list[Turn] = []
    marks: list[dict[str, Any]] = []
    end = 0  # turns kept: up to the last corrected or confirmed one
    for i, stored in enumerate(conversation.turns):
        label = label_of(stored)
        if label == "rejected":
            break
        turns.append(stored.correction if label == "corrected" else stored.turn)
        if label is not None:
            marks.append(_mark(i, stored, label))
        if label in ("corrected", "confirmed"):
            end = len(turns)
        if label == "corrected":
            break
    return turns[:end], [m for m in marks if m["index"] < end]


def _notes(conversation: StoredConversation, upto: int) -> str:
    lines = []
    for i, stored in enumerate(conversation.turns[:upto]):
        label = label_of(stored)
        if label == "rejected":
            lines.append(f"turn {i} ({turn_to_seed(stored.turn)['role']}): a user rated it bad")
        elif label == "corrected":
            fixed = json.dumps(turn_to_seed(stored.correction), ensure_ascii=False)
            lines.append(f"turn {i} ({turn_to_seed(stored.turn)['role']}): a user corrected it to {fixed}")
        elif label == "confirmed":
            lines.append(f"turn {i} ({turn_to_seed(stored.turn)['role']}): a user rated it good")
    return "\n".join(lines)


def export(conversations: Sequence[StoredConversation], where: str = "") -> Export:
    """Sort every conversation's labelled turns into training dialogues and annotation tasks, counting all of it."""
    out = Export()
    counts = out.counts
    for conv in conversations:
        labels = [label_of(t) for t in conv.turns]
        if not any(label in ("corrected", "confirmed", "rejected") for label in labels):
            counts["conversations without feedback (not exported)"] += 1
            continue
        place = f"{where}: conversation {conv.id}"
        turns, marks = training_span(conv)
        if turns:
            out.train.append(TrainDialogue(Dialogue(tuple(turns), tools=conv.tools, id=conv.id, where=place), conv,
                                           tuple(marks)))
            for m in marks:
                counts[f"{m['label']} turns trained" if m["label"] != "unrated" else
                       f"unreviewed {m['by']} turns trained"] += 1
        for i, label in enumerate(labels):
            if label in ("corrected", "confirmed") and i >= len(turns):
                counts[f"{label} turns past a cut (not trained)"] += 1
        rejected = [i for i, label in enumerate(labels) if label == "rejected"]
        if rejected:
            upto = rejected[-1] + 1
            dialogue = Dialogue(tuple(t.turn for t in conv.turns[:upto]), tools=conv.tools, id=conv.id, where=place)
            out.annotate.append(AnnotateDialogue(dialogue, conv, _notes(conv, upto)))
    counts["dialogues to train on"] = len(out.train)
    counts["conversations to annotate"] = len(out.annotate)
    return out


def label_rows(result: Export) -> list[dict[str, Any]]:
    """The labels file: line k describes the k-th training dialogue (1-based, as `data merge-annotations` counts)."""
    return [{"line": k, "conversation": t.conversation.id, "source": t.conversation.source,
             "runs": sorted({s.run for s in t.conversation.turns[:len(t.dialogue.turns)] if s.run}),
             "turns": list(t.labels)} for k, t in enumerate(result.train, start=1)]


def label_studio_tasks(result: Export, batch: str) -> list[dict[str, Any]]:
    """Label Studio tasks for the annotation dialogues, as `data select --label-studio` writes them (line k is the
    k-th dialogue of the annotation file); `uncertainty` is 1: a user said the turn was wrong."""
    return [label_studio_task(k, a.dialogue, batch, 1.0, a.notes) for k, a in enumerate(result.annotate, start=1)]


# ---- the report ----------------------------------------------------------------------------------------------------

def _canonical(value: Any) -> str:
    """A value's JSON with numbers as floats (400 == 400.0) and lists as multisets (facilities in another order are
    the same facilities)."""
    if isinstance(value, list):
        return json.dumps(sorted(_canonical(v) for v in value), ensure_ascii=False)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def slot_changes(original: Turn, corrected: Turn) -> dict[str, str]:
    """key -> kept, changed, added (the model left it out) or removed (the model wrote it, the user took it out)."""
    before = original.arguments if isinstance(original, Call) else {}
    after = corrected.arguments if isinstance(corrected, Call) else {}
    out = {}
    for key in dict.fromkeys([*after, *before]):
        if key in before and key in after:
            out[key] = "kept" if _canonical(before[key]) == _canonical(after[key]) else "changed"
        else:
            out[key] = "added" if key in after else "removed"
    return out


SLOT_COLUMNS = ("confirmed", "kept", "changed", "added", "removed", "in rejected calls")


def slot_table(conversations: Sequence[StoredConversation]) -> dict[str, Counter]:
    """Per argument key: how often users confirmed it, and in their corrections kept, changed, added or removed it;
    and how often it was in a call rated bad without a correction."""
    table: dict[str, Counter] = {}
    for conv in conversations:
        for stored in conv.turns:
            label = label_of(stored)
            if label == "corrected":
                for key, change in slot_changes(stored.turn, stored.correction).items():
                    table.setdefault(key, Counter())[change] += 1
            elif label in ("confirmed", "rejected") and isinstance(stored.turn, Call):
                column = "confirmed" if label == "confirmed" else "in rejected calls"
                for key in stored.turn.arguments:
                    table.setdefault(key, Counter())[column] += 1
    return table


def run_table(conversations: Sequence[StoredConversation]) -> dict[str, Counter]:
    """Per run: conversations and completions it answered, its model turns by label."""
    table: dict[str, Counter] = {}
    for conv in conversations:
        runs_here = set()
        completions = set()
        for stored in conv.turns:
            if stored.completion is None:
                continue
            row = table.setdefault(stored.run or "?", Counter())
            runs_here.add(stored.run or "?")
            if stored.completion not in completions:
                completions.add(stored.completion)
                row["completions"] += 1
            label = label_of(stored)
            if label is not None and stored.by_model:
                row["model turns"] += 1
                row[label] += 1
        for run in runs_here:
            table[run]["conversations"] += 1
    return table


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _date(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def report(conversations: Sequence[StoredConversation], result: Export, db: str,
           written: Sequence[str] = ()) -> str:
    """The markdown report: turns by feedback, per slot key, per run, and what the export wrote."""
    model_turns = [s for c in conversations for s in c.turns if s.by_model]
    sources = Counter(c.source for c in conversations)
    lines = [f"# Feedback from {db}", ""]
    if conversations:
        lines.append(f"{len(conversations)} conversations ({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}"
                     f"), {len({s.completion for s in model_turns})} completions, {len(model_turns)} model turns, "
                     f"from {_date(min(c.started for c in conversations))} to "
                     f"{_date(max(c.updated for c in conversations))}.")
    else:
        lines.append("No conversation stored.")
    lines += ["", "## Model turns by feedback", "",
              "A turn that was corrected counts as corrected whatever its rating.", "",
              "| feedback | calls | replies | all | share |", "| --- | ---: | ---: | ---: | ---: |"]
    for label in LABELS:
        calls = sum(label_of(s) == label and isinstance(s.turn, Call) for s in model_turns)
        replies = sum(label_of(s) == label and isinstance(s.turn, Assistant) for s in model_turns)
        share = _pct(calls + replies, len(model_turns))
        lines.append(f"| {label} | {calls} | {replies} | {calls + replies} | {share} |")
    n_calls = sum(isinstance(s.turn, Call) for s in model_turns)
    lines.append(f"| all | {n_calls} | {len(model_turns) - n_calls} | {len(model_turns)} | |")
    slots = slot_table(conversations)
    lines += ["", "## Per slot key", "",
              "Calls users confirmed, corrected or rejected, by argument key: confirmed (in a call rated good); in a "
              "correction kept, changed, added (the model left it out) or removed (the model wrote it); in a call "
              "rated bad without a correction.", "",
              "| key | " + " | ".join(SLOT_COLUMNS) + " |", "| --- |" + " ---: |" * len(SLOT_COLUMNS)]
    for key in sorted(slots, key=lambda k: (-sum(slots[k].values()), k)):
        lines.append(f"| {key} | " + " | ".join(str(slots[key][c]) for c in SLOT_COLUMNS) + " |")
    runs = run_table(conversations)
    lines += ["", "## Per run", "",
              "| run | conversations | completions | model turns | corrected | confirmed | rejected | unrated | "
              "wrong of reviewed |", "| --- |" + " ---: |" * 8]
    for run in sorted(runs):
        r = runs[run]
        lines.append(f"| {run} | {r['conversations']} | {r['completions']} | {r['model turns']} | {r['corrected']} | "
                     f"{r['confirmed']} | {r['rejected']} | {r['unrated']} | "
                     f"{_pct(r['corrected'] + r['rejected'], r['corrected'] + r['rejected'] + r['confirmed'])} |")
    lines += ["", "## Export", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(result.counts.items())]
    lines += [f"- wrote {w}" for w in written]
    return "\n".join(lines) + "\n"
