"""The OpenAI chat-completions wire format on top of a `Session`: request -> turns, exchange -> response or chunks.

Messages are read by `tooltune.files.openai` (the same reader as training files), so a request is checked exactly
as a dialogue file is: one call per assistant message, each `tool` message answering the call before it, no
`system` message (the chat format renders its own). Text content may also be a list of `{"type": "text"}` parts.

What is supported, and what is refused with a 400 rather than silently ignored:
- `tools`: function tools whose names the model knows (`search_hotels`); the model's own schema is what it is shown.
- `tool_choice`: "auto" (default): the model decides; "none": the client wants no tool call, so a call the model
  makes is run by the server, as with `--execute-tools`. "required" and a named function are refused: greedy
  decoding cannot force a call. A request without `tools` is treated as "none" (the client cannot run the tool).
- `n` must be 1. Decoding is greedy: `temperature`, `top_p`, `seed`, `max_tokens` and the like are accepted and
  have no effect (the server's generation settings decide); the response's `X-Tooltune-Ignored` header names them.

Beside them, `POST /v1/feedback` (`parse_feedback`) takes a rating and/or a correction of a turn a completion wrote:
`{"completion_id": "chatcmpl-...", "turn": 3, "rating": "good" | "bad", "correction": {"arguments": {...}} | {"content":
"..."}}` (`turn`, the index of the turn's message in `messages`, defaults to the completion's last turn; a rating or a
correction, or both). An unknown completion id is a 404, a bad field a 400 naming it (`tooltune.feedback.store`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from tooltune import jsonio
from tooltune.bot.session import Exchange, Search
from tooltune.dialogue import Call, Dialogue, Result, Tool, Turn, User, turn_to_seed
from tooltune.errors import InputError
from tooltune.feedback.store import RATINGS, Correction, Feedback
from tooltune.files import openai as openai_file

WHERE = "request"
IGNORED = ("temperature", "top_p", "seed", "max_tokens", "max_completion_tokens", "presence_penalty",
           "frequency_penalty", "stop", "user", "logit_bias", "parallel_tool_calls", "stream_options", "metadata")


class ApiError(Exception):
    """An error the client receives as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_input(cls, e: InputError) -> "ApiError":
        return cls(400, e.message, param=e.field, code="invalid_value")


@dataclass(frozen=True)
class ChatRequest:
    history: tuple[Turn, ...]
    stream: bool
    execute: bool
    """Whether the server runs the model's calls (the client declared no tool, asked for none, or the server
    was started with --execute-tools)."""
    ignored: tuple[str, ...]
    """Fields given that have no effect here (greedy decoding)."""


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = jsonio.loads(jsonio.decode_utf8(raw, "request body"), "request body", line=1)
    except InputError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _text_content(messages: Any) -> Any:
    """Messages with list-of-text-parts content joined into a string (what the dialogue reader takes)."""
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be a list", param="messages")
    out = []
    for i, msg in enumerate(messages):
        if isinstance(msg, dict):
            # A client that sends back the assistant messages it received adds empty fields (`refusal: null`,
            # `annotations: []`): they say nothing, so they go; any other key not in the reader's table is refused.
            msg = {k: v for k, v in msg.items() if v is not None and v != []}
        if isinstance(msg, dict) and isinstance(msg.get("content"), list):
            parts = msg["content"]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in parts):
                raise ApiError(400, "only text content parts are supported", param=f"messages[{i}].content")
            msg = {**msg, "content": "".join(p["text"] for p in parts)}
        out.append(msg)
    return out


def _without_strict(tools: Any) -> Any:
    """Tools with OpenAI's `strict` flag left out of each function: it asks for schema-true arguments, which
    `--constrained` decides here, not the request (the tool file reader refuses keys it does not know)."""
    if not isinstance(tools, list):
        return tools
    return [{**t, "function": {k: v for k, v in t["function"].items() if k != "strict"}}
            if isinstance(t, dict) and isinstance(t.get("function"), dict) else t for t in tools]


def parse_chat_request(body: dict[str, Any], known_tools: tuple[Tool, ...], execute_tools: bool) -> ChatRequest:
    """A checked request; `ApiError` (400) names the offending field."""
    if "messages" not in body:
        raise ApiError(400, "missing required field 'messages'", param="messages")
    if not isinstance(body.get("model", ""), str):
        raise ApiError(400, "'model' must be a string", param="model")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    choice = body.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise ApiError(400, f"tool_choice {json.dumps(choice, ensure_ascii=False)} is not supported: the model "
                            f"decides whether to call ('auto'), or the server runs its calls ('none')",
                       param="tool_choice", code="unsupported_value")
    record = {"messages": _text_content(body["messages"])}
    if "tools" in body:
        record["tools"] = _without_strict(body["tools"])
    try:
        dialogue: Dialogue = openai_file.parse(record, WHERE, Counter())
    except InputError as e:
        raise ApiError.from_input(e) from None
    names = {t.name for t in known_tools}
    for i, tool in enumerate(dialogue.tools):
        if tool.name not in names:
            raise ApiError(400, f"this model knows only {', '.join(sorted(names))}, not {tool.name!r}",
                           param=f"tools[{i}]", code="unsupported_value")
    if not isinstance(dialogue.turns[-1], (User, Result)):
        raise ApiError(400, "the last message must be a user or tool message (the model answers it)",
                       param=f"messages[{len(dialogue.turns) - 1}]")
    execute = execute_tools or choice == "none" or not dialogue.tools
    ignored = tuple(k for k in IGNORED if k in body)
    return ChatRequest(dialogue.turns, stream, execute, ignored)


# ---- responses ---------------------------------------------------------------------------------------------------

def _message(exchange: Exchange, executed: bool) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason an exchange ends with. Without a reply the exchange ends with a call
    that was not run: the client's to run, or (`executed`: the server runs calls) one past the server's bound,
    answered as an empty message with finish_reason "length"."""
    if exchange.reply is not None:
        return {"role": "assistant", "content": exchange.reply}, "stop"
    if executed:
        return {"role": "assistant", "content": ""}, "length"
    last: Search = exchange.searches[-1]
    call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": last.call.name, "arguments": json.dumps(last.call.arguments, ensure_ascii=False)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(exchange: Exchange, model: str, executed: bool, id: str | None = None) -> dict[str, Any]:
    """A `chat.completion` object for the exchange (`executed`: the server ran the model's calls; `id`: the
    completion id, which feedback on it names; a new one when None)."""
    message, finish = _message(exchange, executed)
    return {"id": id or new_completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def chunks(full: dict[str, Any], piece: int = 16) -> Iterator[str]:
    """The SSE lines of a completion streamed: a role chunk, content (or tool-call) deltas, a finish chunk, [DONE].
    The turn is generated before the first chunk (one lock-held generation per request), then sent in pieces."""
    head = {k: full[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = full["choices"][0]
    message = choice["message"]

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        body = head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    text = message.get("content") or ""
    for k in range(0, len(text), piece):
        yield event({"content": text[k:k + piece]})
    for i, call in enumerate(message.get("tool_calls") or []):
        yield event({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]})
        args = call["function"]["arguments"]
        for k in range(0, len(args), piece):
            yield event({"tool_calls": [{"index": i, "function": {"arguments": args[k:k + piece]}}]})
    yield event({}, choice["finish_reason"])
    yield "data: [DONE]\n\n"


def web_answer(exchange: Exchange, history: list[Turn], tools: tuple[Tool, ...],
               completion_id: str | None = None) -> dict[str, Any]:
    """What the web page shows: each search (call, records or error), the reply, and the whole conversation as
    OpenAI messages for the page to send back next time. With `completion_id` (feedback on), the page may rate or
    correct each call and the reply: `turn` is each one's index in `messages`, `tools` the schemas its edit form is
    built from."""
    first = len(history) - len(exchange.turns)  # the exchange's turns end the history
    call_turns = [first + i for i, t in enumerate(exchange.turns) if isinstance(t, Call)]
    searches = [{"name": s.call.name, "arguments": s.call.arguments, "records": s.records, "error": s.error,
                 "unmatched": s.unmatched, "executed": s.executed, "turn": k}
                for s, k in zip(exchange.searches, call_turns)]
    messages = openai_file.to_record(Dialogue(tuple(history), tools=tools))["messages"]
    return {"searches": searches, "reply": exchange.reply,
            "reply_turn": len(history) - 1 if exchange.reply is not None else None,
            "malformed": exchange.malformed, "messages": messages, "completion_id": completion_id,
            "tools": [t.to_dict() for t in tools] if completion_id else []}


# ---- feedback ----------------------------------------------------------------------------------------------------

FEEDBACK_KEYS = ("completion_id", "turn", "rating", "correction")


@dataclass(frozen=True)
class FeedbackRequest:
    """`POST /v1/feedback`: a rating and/or a correction of one turn a completion wrote."""

    completion_id: str
    turn: int | None
    """Index of the turn in the conversation (its message's index in `messages`); None: the completion's last turn
    (the message the client received)."""
    rating: str | None
    correction: Correction | None


def parse_feedback(body: dict[str, Any]) -> FeedbackRequest:
    """A checked feedback request; `ApiError` (400) names the offending field."""
    try:
        jsonio.check_keys(body, FEEDBACK_KEYS, None)
    except InputError as e:
        raise ApiError.from_input(e) from None
    cid = body.get("completion_id")
    if not isinstance(cid, str) or not cid:
        raise ApiError(400, "missing or not a string: the id of the completion (`id` of its response)",
                       param="completion_id")
    turn = body.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int) or turn < 0):
        raise ApiError(400, "must be a non-negative integer (the turn's index in messages)", param="turn")
    rating = body.get("rating")
    if rating is not None and rating not in RATINGS:
        raise ApiError(400, f"must be one of {', '.join(RATINGS)}", param="rating", code="invalid_value")
    try:
        correction = Correction.from_json(body["correction"]) if body.get("correction") is not None else None
    except InputError as e:
        raise ApiError.from_input(e) from None
    if rating is None and correction is None:
        raise ApiError(400, "give a rating ('good' or 'bad'), a correction, or both", param="rating")
    return FeedbackRequest(cid, turn, rating, correction)


def feedback_answer(feedback: Feedback) -> dict[str, Any]:
    """The response to a feedback request: what the turn now holds (roles as the seed format names them: a call is
    `search`, a reply `assistant`)."""
    def seed(turn: Turn | None) -> dict[str, Any] | None:
        return turn_to_seed(turn) if turn is not None else None

    return {"object": "feedback", "completion_id": feedback.completion_id, "turn": feedback.turn,
            "role": turn_to_seed(feedback.original)["role"], "rating": feedback.rating,
            "correction": seed(feedback.correction)}
