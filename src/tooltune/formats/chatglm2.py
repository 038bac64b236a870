"""`chatglm2`: one sample per model turn, the history as `[Round i]\\n问: ...\\n答: ...` text (lecture 11.4, method 1).

Each sample's input is the whole history before one model turn; its output (trained, then a trained eos) is that
turn. The lecture's rounds only hold text; a round here may hold a call and its result before the reply:

    [Round 0]
    问: 帮我找一家有早餐服务的酒店
    答: search_hotels
    {"facilities": ["早餐服务"]}
    结果: [{"name": "北京新世界酒店", ...}]
    答: 给您推荐北京新世界酒店。
    [Round 1]
    问: ...
    答: 

A call is the tool name on its own line and its arguments as one line of JSON. The history is re-read for every
model turn, so this format costs the most tokens per epoch (bench/results/formats.md); "last" keeps only the
sample of the dialogue's last model turn.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.formats.base import (BOS, EOS, ChatFormat, ParsedTurn, Piece, Segment, check_prompt_turns, cut_at_stop,
                                   merge, read_json_object, records_json)

_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n")


class ChatGLM2Format(ChatFormat):
    name = "chatglm2"
    stop_strings = ("\n[Round", "\n问:", "\n结果:")
    special_tokens = ()

    def _history(self, turns: Sequence[Turn], observation: str) -> list[tuple[str, int | None]]:
        """(text, model turn index or None) per turn; a model turn's text is without its line end."""
        out: list[tuple[str, int | None]] = []
        round_no = 0
        for i, turn in enumerate(turns):
            if isinstance(turn, User):
                out.append((f"[Round {round_no}]\n问: {turn.content}\n答: ", None))
                round_no += 1
            elif isinstance(turn, Result):
                out.append((f"结果: {records_json(turn.records, observation)}\n答: ", None))
            else:
                out.append((target_text(turn), i))
        return out

    @staticmethod
    def _context(items: list[tuple[str, int | None]]) -> list[Piece]:
        text = "".join(t + ("\n" if target is not None else "") for t, target in items)
        return [(Segment(BOS, False, special=True), None), (Segment(text, False), None)]

    def _samples(self, dialogue: Dialogue, observation: str) -> list[list[Piece]]:
        items = self._history(dialogue.turns, observation)
        return [self._context(items[:j]) + [(Segment(text, True), target), (Segment(EOS, True, special=True), target)]
                for j, (text, target) in enumerate(items) if target is not None]

    def prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], *, observation: str = "full") -> list[Segment]:
        check_prompt_turns(turns)
        return merge([seg for seg, _ in self._context(self._history(turns, observation))])

    def parse(self, text: str) -> ParsedTurn:
        body = cut_at_stop(text, self.stop_strings).strip()
        match = _CALL.match(body)
        if match and body[match.end():].lstrip().startswith("{"):
            args, clean = read_json_object(body[match.end():])
            return ParsedTurn(Call(args or {}, name=match.group(1)), malformed=not clean, raw=text)
        return ParsedTurn(Assistant(body), raw=text)


def target_text(turn: Call | Assistant) -> str:
    if isinstance(turn, Assistant):
        return turn.content
    return f"{turn.name}\n{json.dumps(turn.arguments, ensure_ascii=False)}"
