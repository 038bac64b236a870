"""What a model is asked to predict, and the two ways of asking.

Turn mode (the course's, and the reference table's): one unit per gold call or reply, with the gold history before
it as context (teacher forcing). On the course's test split that is 560 units, 242 calls and 318 replies, in the
order `test.llama2.jsonl` lists them.

Dialogue mode (the course's ChatGLM3 script's second view): a dialogue is walked from the start and the model's own
earlier outputs replace the gold calls and replies in the history; user turns and tool results stay gold. Its rows
carry the same ids as turn mode, so the two can be compared row by row; `MODES` names them for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from tooltune.dialogue import HOTEL_TOOL, Assistant, Call, Dialogue, Tool, Turn
from tooltune.evaluate.predictions import Row, Target

if TYPE_CHECKING:  # only a type here: the generator's module loads torch
    from tooltune.inference import Prediction

MODES = {
    "turn": "teacher forcing: each unit sees the gold history (the course's definition, the reference table's)",
    "dialogue": "the model's own earlier outputs fed back as history (the course's second view; not the table's)",
}


@dataclass(frozen=True)
class Unit:
    """One turn to predict, with everything before it."""

    id: str
    """`split:dialogue:turn`, e.g. `test:17:3` = dialogue 17 (0-based, file order), turn 3 (0-based seed turns)."""
    history: tuple[Turn, ...]
    """The turns before the gold one: gold in turn mode, partly the model's own in dialogue mode."""
    gold: Target
    tools: tuple[Tool, ...] = (HOTEL_TOOL,)
    """The tools the dialogue offers (what a chat format puts in the system prompt)."""


Generate = Callable[[tuple[Turn, ...], tuple[Tool, ...]], "Prediction"]
"""`generate(history, tools) -> Prediction` (`tooltune.inference.Prediction`): the model's next call or reply after
`history`."""


def unit_id(split: str, dialogue_index: int, turn_index: int) -> str:
    return f"{split}:{dialogue_index}:{turn_index}"


def eval_units(dialogues: Iterable[Dialogue], split: str = "test") -> list[Unit]:
    """Turn mode: one unit per call or reply that has history (every one does: a dialogue opens with the user)."""
    # A checked Dialogue starts with a user turn, so every target (index > 0) has history: no unit is skipped.
    return [Unit(unit_id(split, d_index, t_index), dialogue.turns[:t_index], dialogue.turns[t_index], dialogue.tools)
            for d_index, dialogue in enumerate(dialogues) for t_index in dialogue.targets()]


def fed_back(prediction: Prediction) -> Turn:
    """The turn a prediction becomes in a dialogue-mode history: the parsed turn, or, when unparsable, the raw text
    as a reply (that is what the model said; the course's script would record an empty call instead)."""
    turn = prediction.parsed.turn
    return turn if turn is not None else Assistant(prediction.raw.strip())


def predict_dialogue(dialogue: Dialogue, generate: Generate, split: str = "test",
                     dialogue_index: int = 0) -> list[Row]:
    """Dialogue mode for one dialogue: at each gold call or reply, generate from the history built so far, score
    against the gold turn, and put the prediction (not the gold) into the history that later turns see."""
    history: list[Turn] = []
    rows = []
    for t_index, turn in enumerate(dialogue.turns):
        if isinstance(turn, (Call, Assistant)):
            prediction = generate(tuple(history), dialogue.tools)
            rows.append(Row(unit_id(split, dialogue_index, t_index), turn, prediction.parsed.turn, prediction.raw))
            history.append(fed_back(prediction))
        else:
            history.append(turn)
    return rows


def predict_dialogues(dialogues: Iterable[Dialogue], generate: Generate, split: str = "test") -> list[Row]:
    """Dialogue mode over a split; row ids match `eval_units` on the same dialogues."""
    return [row for i, d in enumerate(dialogues) for row in predict_dialogue(d, generate, split, i)]
