"""`chatglm3`: role tokens, all rounds in one pass (lecture 11.4, method 2, as the course's ChatGLM3 preprocessing).

Each message is a role token (ONE token: `<|system|> <|user|> <|assistant|> <|observation|>`), a metadata line, then
the content: `<|user|>\\n...`, `<|assistant|>\\n...`, a call `<|assistant|>search_hotels\\n` + "```python\\n
tool_call(facilities=['早餐服务'], type='经济型')\\n```" (the course's Python-call body, arguments as Python literals,
so 300.0 stays a float), `<|observation|>\\n` + the records' JSON. The system message is "Answer the following
questions as best as you can. You have access to the following tools:\\n" + the tools as JSON (indent 4). The
sequence starts with the tokenizer's prefix (`[gMASK]sop` for ChatGLM3) and ends with eos.

What is trained, reproduced from the course (its loss mask is shifted by one before it becomes labels): every token
of a model message after its role token, plus the ONE token that follows the message - the next role token
(`<|user|>` after a reply, `<|observation|>` after a call, `<|assistant|>` after the thought) or the final eos.
That following token is how the model learns to stop, and why `<|user|>` and `<|observation|>` are the stop strings.

The thought: the course's data puts an assistant message "我需要使用search_hotels工具来查询酒店" before every call.
It is rendered (and trained) by default, as the course did, so that a ChatGLM3 checkpoint sees its own pattern:
`ChatGLM3Format(thought=None)` leaves it out (fewer tokens; the call's metadata line then makes the decision).
A call with no result (the course's data ends 330 dialogues with one) gets the course's `<|observation|>\\nnull`.
Generated text must be decoded with special tokens kept: the role tokens are this format's syntax.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Sequence

from tooltune import jsonio
from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.formats.base import (BOS, EOS, ChatFormat, ParsedTurn, Piece, Segment, check_prompt_turns, cut_at_stop,
                                   merge, read_json_object, records_json, result_after,
                                   tools_json)

SYSTEM_PREFIX = "Answer the following questions as best as you can. You have access to the following tools:\n"
THOUGHT = "我需要使用{name}工具来查询酒店"
SYSTEM, USER, ASSISTANT, OBSERVATION = "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"
CALL_OPEN, CALL_CLOSE = "```python\n", "\n```"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class ChatGLM3Format(ChatFormat):
    name = "chatglm3"
    stop_strings = (USER, OBSERVATION)
    special_tokens = (SYSTEM, USER, ASSISTANT, OBSERVATION)

    def __init__(self, thought: str | None = THOUGHT):
        self.thought = thought
        """The assistant message put before each call (`{name}`: the tool's name); None: none."""
        self._thought = None if thought is None else re.compile(
            re.escape(thought).replace(re.escape("{name}"), r"(\w+)"))

    def _samples(self, dialogue: Dialogue, observation: str) -> list[list[Piece]]:
        pieces = self._pieces(dialogue.turns, dialogue.tools, observation)
        pieces.append((Segment(EOS, False, special=True), None))
        return [train_following_token(pieces)]

    def prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], *, observation: str = "full") -> list[Segment]:
        check_prompt_turns(turns)
        pieces = self._pieces(turns, tools, observation) + [(_role(ASSISTANT), None)]
        return merge([Segment(seg.text, False, seg.special) for seg, _ in pieces])

    def system_prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], system: str, *,
                      observation: str = "full") -> list[Segment]:
        """ChatGLM3 has a system role: a client's system text follows the tools in its system message."""
        check_prompt_turns(turns)
        pieces = self._pieces(turns, tools, observation, system) + [(_role(ASSISTANT), None)]
        return merge([Segment(seg.text, False, seg.special) for seg, _ in pieces])

    def _pieces(self, turns: Sequence[Turn], tools: Sequence[Tool], observation: str,
                system: str = "") -> list[Piece]:
        extra = "\n" + system if system else ""
        pieces: list[Piece] = [(Segment(BOS, False, special=True), None), (_role(SYSTEM), None),
                               (Segment("\n" + SYSTEM_PREFIX + tools_json(tools) + extra, False), None)]
        for i, turn in enumerate(turns):
            if isinstance(turn, User):
                pieces += [(_role(USER), None), (Segment("\n" + turn.content, False), None)]
            elif isinstance(turn, Assistant):
                pieces += [(_role(ASSISTANT), None), (Segment("\n" + turn.content, True), i)]
            elif isinstance(turn, Call):
                if self.thought is not None:
                    pieces += [(_role(ASSISTANT), None), (Segment("\n" + self.thought.format(name=turn.name), True), i)]
                pieces += [(_role(ASSISTANT), None), (Segment(f"{turn.name}\n{call_body(turn.arguments)}", True), i)]
                if result_after(turns, i) is None:  # the course's `observation: null` for an unanswered call
                    pieces += [(_role(OBSERVATION), None), (Segment("\nnull", False), None)]
            elif isinstance(turn, Result):
                pieces += [(_role(OBSERVATION), None), (Segment("\n" + records_json(turn.records, observation), False),
                                                        None)]
        return pieces

    def parse(self, text: str) -> ParsedTurn:
        body = cut_at_stop(text, self.stop_strings)
        messages = [m for m in body.split(ASSISTANT) if m.strip()]
        if not messages:
            return ParsedTurn(Assistant(""), malformed=True, raw=text)
        last = messages[-1]
        if last.startswith("\n") or "\n" not in last.lstrip():
            content = last.strip()
            announced = self._thought and self._thought.fullmatch(content)
            if announced:  # the model announced a call and stopped
                return ParsedTurn(Call({}, name=announced.group(1)), malformed=True, raw=text)
            return ParsedTurn(Assistant(content), raw=text)
        name, _, rest = last.lstrip().partition("\n")
        if not _NAME.fullmatch(name.strip()):  # not a tool name: a reply that lost its leading newline
            return ParsedTurn(Assistant(last.strip()), malformed=True, raw=text)
        args, malformed = parse_call_body(rest), False
        if args is None:  # some checkpoints write the arguments as JSON rather than as a Python call
            args, clean = read_json_object(rest)
            malformed = not clean
        return ParsedTurn(Call(args or {}, name=name.strip()), malformed=malformed, raw=text)


def _role(token: str) -> Segment:
    return Segment(token, False, special=True)


def train_following_token(pieces: list[Piece]) -> list[Piece]:
    """The course's shifted loss mask: the special token right after a trained message is trained too."""
    out: list[Piece] = []
    for seg, turn in pieces:
        prev_seg, prev_turn = out[-1] if out else (None, None)
        if seg.special and prev_seg is not None and prev_seg.trainable and not prev_seg.special:
            out.append((Segment(seg.text, True, special=True), prev_turn))
        else:
            out.append((seg, turn))
    return out


def call_body(arguments: dict[str, Any]) -> str:
    """The course's call body: ```python\\ntool_call(key=value, ...)\\n``` with Python literals."""
    return CALL_OPEN + "tool_call(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")" + CALL_CLOSE


def parse_call_body(text: str) -> dict[str, Any] | None:
    """Arguments of a `tool_call(...)` body (fenced or not); None when it cannot be read or holds anything but JSON
    values (see `jsonio.json_problem`). Never raises."""
    code = text.strip()
    if code.startswith("```"):
        code = code.split("\n", 1)[1] if "\n" in code else ""
    code = code.split("```", 1)[0].strip()
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    call = tree.body
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        return None
    try:
        args = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    # literal_eval also reads sets, bytes, complex numbers, tuples and `...`: no tool argument holds those
    return None if jsonio.json_problem(args) is not None else args
