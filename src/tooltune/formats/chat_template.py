"""`chat_template`: the tokenizer's own Jinja chat template, with `tools` (Qwen-style `<tool_call>` and the like).

The template renders text; which parts are trained is found by rendering prefixes: for each model message k, the
text of messages[:k] with the generation prompt and the text of messages[:k+1] must both be prefixes of the whole
dialogue's text (a template that rewrites earlier turns, e.g. one that drops old reasoning, is refused with an
error). The difference is the model's message plus the template's end-of-turn marker (`<|im_end|>`); it is trained
without its trailing whitespace, so that the model learns to close its turn. Stop strings are that marker.

Templates without tool support (Gemma-3 style: no `tools` variable, strict user/assistant alternation): the tools
go into a system message (which such templates fold into the first user turn; a template that refuses the system
role gets them at the start of the first user message) with an instruction to answer a call as `<tool_call>{"name": ..., "arguments": ...}</tool_call>`; a call is that text as the assistant's message and a
result a user message `<tool_response>...</tool_response>`. A dialogue's turn order (user, call, result, reply)
then alternates user/assistant as such templates demand.

Use `FORMATS["chat_template"].for_tokenizer(tokenizer)`: the registered instance has no template of its own.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from tooltune.dialogue import Assistant, Call, Dialogue, Result, Tool, Turn, User
from tooltune.errors import InputError
from tooltune.formats.base import (ChatFormat, ParsedTurn, Piece, Segment, check_prompt_turns, cut_at_stop,
                                   read_json_object, records_json)

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_INSTRUCTION = ("You can call the following tools. To call one, reply with only "
                    "<tool_call>{\"name\": <tool name>, \"arguments\": <arguments object>}</tool_call>.\n")


class ChatTemplateFormat(ChatFormat):
    name = "chat_template"
    special_tokens = ()

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        if tokenizer is not None and not isinstance(template, str):
            raise InputError("the tokenizer has no chat template (a string); pick another format", field="format")
        self.native_tools = bool(template) and "tools" in template and "tool_calls" in template
        """Whether the template renders `tools` and `tool_calls` itself (else they are written as text)."""
        self.stop_strings = self._end_marker() if tokenizer is not None else ()
        self.system_role = tokenizer is not None and self._accepts_system()
        """Whether the template takes a system message; if not, the tools text opens the first user message."""

    def for_tokenizer(self, tokenizer: Any) -> "ChatTemplateFormat":
        return ChatTemplateFormat(tokenizer)

    # ---- messages -------------------------------------------------------------------------------------------
    def messages(self, turns: Sequence[Turn], tools: Sequence[Tool], observation: str) -> list[dict[str, Any]]:
        msgs = [self._message(turn, observation) for turn in turns]
        if not self.native_tools and tools:
            spec = TOOL_INSTRUCTION + json.dumps([t.to_dict() for t in tools], ensure_ascii=False)
            if self.system_role:
                msgs.insert(0, {"role": "system", "content": spec})
            else:
                msgs[0] = dict(msgs[0], content=spec + "\n\n" + msgs[0]["content"])
        return msgs

    def _message(self, turn: Turn, observation: str) -> dict[str, Any]:
        if isinstance(turn, User):
            return {"role": "user", "content": turn.content}
        if isinstance(turn, Assistant):
            return {"role": "assistant", "content": turn.content}
        if isinstance(turn, Call):
            if self.native_tools:
                return {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": turn.name, "arguments": turn.arguments}}]}
            call = json.dumps({"name": turn.name, "arguments": turn.arguments}, ensure_ascii=False)
            return {"role": "assistant", "content": f"{CALL_OPEN}{call}{CALL_CLOSE}"}
        assert isinstance(turn, Result)
        content = records_json(turn.records, observation)
        if self.native_tools:
            return {"role": "tool", "name": turn.name, "content": content}
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}

    def _text(self, msgs: list[dict[str, Any]], tools: Sequence[Tool], generation_prompt: bool) -> str:
        if self.tokenizer is None:
            raise InputError("chat_template needs a tokenizer: use FORMATS['chat_template'].for_tokenizer(tok)",
                             field="format")
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if self.native_tools and tools:
            kwargs["tools"] = [{"type": "function", "function": t.to_dict()} for t in tools]
        try:
            return self.tokenizer.apply_chat_template(msgs, **kwargs)
        except Exception as e:  # jinja's TemplateError and the template's own raise_exception
            raise InputError(f"the chat template refused this dialogue: {e}", field="chat_template") from None

    def _end_marker(self) -> tuple[str, ...]:
        """What the template writes after an assistant message, found from a probe dialogue."""
        probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        before = self._text(probe[:1], (), True)
        after = self._text(probe, (), False)
        if not after.startswith(before):
            return ()
        marker = after[len(before):].split("y", 1)[-1].strip()
        return (marker,) if marker else ()

    def _accepts_system(self) -> bool:
        try:
            self._text([{"role": "system", "content": "s"}, {"role": "user", "content": "x"}], (), False)
        except InputError:
            return False
        return True

    # ---- ChatFormat ---------------------------------------------------------------------------------------------
    def _samples(self, dialogue: Dialogue, observation: str) -> list[list[Piece]]:
        turns, tools = dialogue.turns, dialogue.tools
        msgs = self.messages(turns, tools, observation)
        offset = len(msgs) - len(turns)  # the system message written for tool-less templates
        whole = self._text(msgs, tools, False)
        pieces: list[Piece] = []
        done = 0
        for i, turn in enumerate(turns):
            if not isinstance(turn, (Call, Assistant)):
                continue
            k = i + offset
            start = len(self._checked_prefix(msgs[:k], tools, True, whole, done))
            end = len(self._checked_prefix(msgs[:k + 1], tools, False, whole, start))
            body = whole[start:end]
            trained = body.rstrip()
            pieces += [(Segment(whole[done:start], False), None), (Segment(trained, True), i),
                       (Segment(body[len(trained):], False), None)]
            done = end
        pieces.append((Segment(whole[done:], False), None))
        return [[(s, t) for s, t in pieces if s.text]]

    def _checked_prefix(self, msgs: list[dict[str, Any]], tools: Sequence[Tool], generation_prompt: bool,
                        whole: str, at_least: int) -> str:
        text = self._text(msgs, tools, generation_prompt)
        if not whole.startswith(text) or len(text) < at_least:
            raise InputError("the chat template does not render a dialogue as a prefix of its continuation "
                             "(it rewrites earlier turns), so trained spans cannot be located", field="chat_template")
        return text

    def prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], *, observation: str = "full") -> list[Segment]:
        check_prompt_turns(turns)
        return [Segment(self._text(self.messages(turns, tools, observation), tools, True), False)]

    def system_prompt(self, turns: Sequence[Turn], tools: Sequence[Tool], system: str, *,
                      observation: str = "full") -> list[Segment]:
        """A template with a system role gets the client's system text as its system message (before the tools
        text, when that is written there); one without opens the first user turn with it."""
        if not system or not self.system_role:
            return super().system_prompt(turns, tools, system, observation=observation)
        check_prompt_turns(turns)
        msgs = self.messages(turns, tools, observation)
        if msgs[0]["role"] == "system":
            msgs[0] = dict(msgs[0], content=system + "\n\n" + msgs[0]["content"])
        else:
            msgs.insert(0, {"role": "system", "content": system})
        return [Segment(self._text(msgs, tools, True), False)]

    def parse(self, text: str) -> ParsedTurn:
        body = cut_at_stop(text, self.stop_strings).strip()
        if CALL_OPEN in body:
            inner = body.split(CALL_OPEN, 1)[1].split(CALL_CLOSE, 1)[0]
            return _call(inner, text)
        if body.startswith("{"):
            obj, _ = read_json_object(body)
            if obj is not None and "name" in obj and "arguments" in obj:
                return _call(body, text)
        return ParsedTurn(Assistant(body), raw=text)


def _call(inner: str, raw: str) -> ParsedTurn:
    obj, clean = read_json_object(inner)
    if obj is None or not isinstance(obj.get("name"), str):
        return ParsedTurn(Call({}), malformed=True, raw=raw)
    args = obj.get("arguments", {})
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        args, clean2 = read_json_object(args)
        clean = clean and clean2
    if not isinstance(args, dict):
        return ParsedTurn(Call({}, name=obj["name"]), malformed=True, raw=raw)
    return ParsedTurn(Call(args, name=obj["name"]), malformed=not clean, raw=raw)
