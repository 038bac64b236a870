"""`llama2`: the course's prefix emulation of function calling for a model without tool tokens (lecture 11.5).

Text exactly as the course's `build_prompt` / `build_response`: `[Round i]\\n\\n` before each user or return turn,
`user: ...`, `search:\\n{json, indent 4}`, `return:\\n{json, indent 4}`, `assistant: ...`, each followed by a blank
line. The model writes the prefix itself, so its first token decides between a call and a reply.

One difference, on purpose: the course made one sample per model turn (prompt + response + eos; 4279 samples for
1602 train dialogues); here a dialogue is one sample and every model turn in it is trained, each followed by a
trained eos (where the course's samples ended), so generation still stops there. The history therefore holds an
eos after each earlier model turn, in training and in `prompt` alike. The course's per-turn samples are what
`prompt(turns[:i]) + target` gives (bench/format_tokens.py counts both).
"""

from __future__ import annotations

import json
from typing import Sequence

from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.errors import InputError
from tooltune.formats.base import (BOS, EOS, ChatFormat, ParsedTurn, Piece, Segment, arguments_so_far,
                                   check_prompt_turns, cut_at_stop, merge, read_json_object, records_json,
                                   without_partial_stop)


class Llama2Format(ChatFormat):
    name = "llama2"
    stop_strings = ("\n\n[Round",)
    special_tokens = ()

    def _samples(self, dialogue: Dialogue, observation: str) -> list[list[Piece]]:
        return [self._pieces(dialogue.turns, dialogue.tools, observation)]

    def prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], *, observation: str = "full") -> list[Segment]:
        check_prompt_turns(turns)
        return merge([Segment(seg.text, False, seg.special) for seg, _ in self._pieces(turns, tools, observation)])

    def _pieces(self, turns: Sequence[Turn], tools: Sequence[Tool], observation: str) -> list[Piece]:
        if len(tools) > 1:  # "search" names the one tool; several would need their names in the prefix
            raise InputError("the llama2 format supports one tool (its calls are written `search:`)", field="tools")
        pieces: list[Piece] = [(Segment(BOS, False, special=True), None)]
        round_no = 0
        for i, turn in enumerate(turns):
            if isinstance(turn, (User, Result)):
                pieces.append((Segment(f"[Round {round_no}]\n\n", False), None))
                round_no += 1
            if isinstance(turn, User):
                pieces.append((Segment(f"user: {turn.content}\n\n", False), None))
            elif isinstance(turn, Result):
                pieces.append((Segment(f"return:\n{records_json(turn.records, observation, indent=4)}\n\n", False),
                               None))
            else:
                pieces += [(Segment(target_text(turn), True), i), (Segment(EOS, True, special=True), i),
                           (Segment("\n\n", False), None)]
        return pieces

    def parse(self, text: str) -> ParsedTurn:
        body = cut_at_stop(text, self.stop_strings).strip()
        if body.startswith("search:"):
            args, clean = read_json_object(body[len("search:"):])
            return ParsedTurn(Call(args or {}), malformed=not clean, raw=text)
        if body.startswith("assistant:"):
            return ParsedTurn(Assistant(body[len("assistant:"):].strip()), raw=text)
        return ParsedTurn(Assistant(body), malformed=True, raw=text)

    def partial(self, text: str) -> tuple[str, str] | None:
        """The first word decides: `assistant:` a reply, `search:` a call (see `ChatFormat.partial`)."""
        body = without_partial_stop(text, self.stop_strings).lstrip()
        if body.startswith("assistant:"):
            return "reply", body[len("assistant:"):].strip()
        if body.startswith("search:"):
            return "call", arguments_so_far(body[len("search:"):])
        return None


def target_text(turn: Call | Assistant) -> str:
    """The course's `build_response`: null arguments are left out (the course filtered them)."""
    if isinstance(turn, Assistant):
        return f"assistant: {turn.content}"
    args = {k: v for k, v in turn.arguments.items() if v is not None}
    return "search:\n" + json.dumps(args, indent=4, ensure_ascii=False)
