"""The OpenAI chat-completions wire format on top of a `Session`: request -> turns, exchange -> response or chunks.

Messages are read by `tooltune.datafiles.openai` (the same reader as training files), so a request is checked exactly
as a dialogue file is: one call per assistant message, each `tool` message answering the call before it. Text
content may also be a list of `{"type": "text"}` parts. `system` (or `developer`) messages at the start are joined
and rendered as the chat format defines (`ChatFormat.system_prompt`): in its system message where it has one
(chatglm3, a chat template with a system role), else opening the first user turn, followed by a blank line (llama2,
chatglm2, Gemma's template does the same). A system message after the conversation began is refused.

What is honoured, and what is refused with a 400 naming the field rather than silently ignored:
- `tools`: function tools whose names the model knows (`search_hotels`); the model's own schema is what it is shown.
- `tool_choice`: "auto" (default): the model decides; "none": the client wants no tool call, so a call the model
  makes is run by the server, as with `--execute-tools`. "required" and a named function are refused: the model
  cannot be forced to call. A request without `tools` is treated as "none" (the client cannot run the tool).
- `max_tokens` / `max_completion_tokens`: tokens per model turn, 1 to the server's --max-new-tokens (a reply cut
  there ends with finish_reason "length"); `stop`: a string or up to 4, each ending a model turn where it appears
  (cut from the text); `temperature` 0 to 2 (0, the default: greedy decoding), `top_p` in (0, 1] and `seed` (the
  same seed and request give the same answer) for sampling. `stream` with `stream_options.include_usage`.
- `n` must be 1; `presence_penalty` and `frequency_penalty` must be 0, `logit_bias` empty, `logprobs` false and
  `response_format` text: anything else is refused. `user`, `metadata` and `parallel_tool_calls` (a model turn makes
  at most one call anyway) are accepted and change nothing; any other field is refused as unknown.
- `usage` counts the prompt tokens of every model turn of the exchange (each holds the whole history: a turn that
  calls the server's search and then replies counts two prompts) and the tokens generated.

Beside them, `POST /v1/feedback` (`parse_feedback`) takes a rating and/or a correction of a turn a completion wrote:
`{"completion_id": "chatcmpl-...", "turn": 3, "rating": "good" | "bad", "correction": {"arguments": {...}} | {"content":
"..."}}` (`turn`, the index of the turn's message in `messages`, defaults to the completion's last turn; a rating or a
correction, or both). An unknown completion id is a 404, a bad field a 400 naming it (`tooltune.feedback.store`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tooltune import jsonio
from tooltune.bot.policy import TurnOptions
from tooltune.bot.session import Exchange, Search
from tooltune.dialogue import Call, Dialogue, Result, Tool, Turn, User, turn_to_seed
from tooltune.errors import InputError
from tooltune.feedback.store import RATINGS, Correction, Feedback
from tooltune.datafiles import openai as openai_file

WHERE = "request"
FIELDS = ("messages", "model", "tools", "tool_choice", "stream", "stream_options", "n", "max_tokens",
          "max_completion_tokens", "stop", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty",
          "logit_bias", "logprobs", "top_logprobs", "response_format", "parallel_tool_calls", "user", "metadata")
"""The request fields read here (see the module's docstring for what each does); any other is refused."""
MAX_STOP = 4


class ApiError(Exception):
    """An error the client receives as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}
        """Sent with the error (`Retry-After` on a full queue)."""

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
    options: TurnOptions = TurnOptions()
    """System text, token limit, stop strings and sampling for every model turn of the exchange."""
    include_usage: bool = False
    """Streaming: send a last chunk with `usage` (`stream_options.include_usage`)."""


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = jsonio.loads(jsonio.decode_utf8(raw, "request body"), "request body", line=1)
    except InputError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", param=e.field, code="invalid_json") from None
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


def _system(messages: list[Any]) -> tuple[str, list[Any]]:
    """The leading system (or developer) messages' text, joined by blank lines, and the messages after them."""
    texts = []
    k = 0
    while k < len(messages) and isinstance(messages[k], dict) and messages[k].get("role") in ("system", "developer"):
        msg = messages[k]
        try:
            jsonio.check_keys(msg, ("role", "content", "name"), WHERE, f"messages[{k}]")
        except InputError as e:
            raise ApiError.from_input(e) from None
        if not isinstance(msg.get("content"), str):
            raise ApiError(400, "a system message's content must be text", param=f"messages[{k}].content")
        texts.append(msg["content"])
        k += 1
    for i in range(k, len(messages)):
        if isinstance(messages[i], dict) and messages[i].get("role") in ("system", "developer"):
            raise ApiError(400, "a system message is supported only at the start of the conversation",
                           param=f"messages[{i}].role", code="unsupported_value")
    return "\n\n".join(t for t in texts if t), messages[k:]


def _number(body: dict[str, Any], key: str, low: float, high: float, default: float,
            low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (low < value if low_open else low <= value) and value <= high):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ApiError(400, f"must be a number in {span}, not {json.dumps(value)}", param=key, code="invalid_value")
    return float(value)


def _options(body: dict[str, Any], max_new_tokens: int | None) -> TurnOptions:
    """The turn options a request asks for; each bad or unsupported value is a 400 naming its field."""
    limit_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(limit_key)
    if limit is not None:
        top = max_new_tokens if max_new_tokens is not None else 2**31
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
            raise ApiError(400, f"must be an integer from 1 to {top} (the server's --max-new-tokens), not "
                                f"{json.dumps(limit)}", param=limit_key, code="invalid_value")
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else stop
    if stops is not None and (not isinstance(stops, tuple) or len(stops) > MAX_STOP
                              or not all(isinstance(x, str) and x for x in stops)):
        raise ApiError(400, f"must be a non-empty string or a list of at most {MAX_STOP} of them", param="stop",
                       code="invalid_value")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**63):
        raise ApiError(400, "must be a 64-bit integer", param="seed", code="invalid_value")
    for key in ("presence_penalty", "frequency_penalty"):
        _number(body, key, -2, 2, 0)
        if body.get(key):
            raise ApiError(400, "is not supported: only 0 (no penalty)", param=key, code="unsupported_value")
    unsupported = {"logit_bias": body.get("logit_bias") not in (None, {}),
                   "logprobs": body.get("logprobs") not in (None, False),
                   "top_logprobs": body.get("top_logprobs") not in (None, 0),
                   "response_format": body.get("response_format") not in (None, {"type": "text"})}
    for key, bad in unsupported.items():
        if bad:
            raise ApiError(400, f"{key} is not supported by this server", param=key, code="unsupported_value")
    if not isinstance(body.get("parallel_tool_calls", True), bool):
        raise ApiError(400, "'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
    return TurnOptions(max_new_tokens=limit, stop=stops or (), temperature=_number(body, "temperature", 0, 2, 0.0),
                       top_p=_number(body, "top_p", 0, 1, 1.0, low_open=True), seed=seed)


def parse_chat_request(body: dict[str, Any], known_tools: tuple[Tool, ...], execute_tools: bool,
                       max_new_tokens: int | None = None) -> ChatRequest:
    """A checked request; `ApiError` (400) names the offending field. `max_new_tokens`: the server's bound on
    `max_tokens` (None: not known here)."""
    unknown = [k for k in body if k not in FIELDS]
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (this server reads: {', '.join(FIELDS)})",
                       param=unknown[0], code="unknown_parameter")
    if "messages" not in body:
        raise ApiError(400, "missing required field 'messages'", param="messages")
    if not isinstance(body.get("model", ""), str):
        raise ApiError(400, "'model' must be a string", param="model")
    if body.get("n", 1) not in (1, None) or isinstance(body.get("n"), bool):
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_value")
    stream = body.get("stream", False)
    if not isinstance(stream, (bool, type(None))):
        raise ApiError(400, "'stream' must be a boolean", param="stream")
    usage = body.get("stream_options")
    if usage is not None and (not isinstance(usage, dict) or set(usage) - {"include_usage"}
                              or not isinstance(usage.get("include_usage", False), bool)):
        raise ApiError(400, "must be {\"include_usage\": true | false}", param="stream_options")
    choice = body.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise ApiError(400, f"tool_choice {json.dumps(choice, ensure_ascii=False)} is not supported: the model "
                            f"decides whether to call ('auto'), or the server runs its calls ('none')",
                       param="tool_choice", code="unsupported_value")
    options = _options(body, max_new_tokens)
    system, messages = _system(_text_content(body["messages"]))
    record = {"messages": messages}
    if "tools" in body:
        record["tools"] = _without_strict(body["tools"])
    try:
        dialogue: Dialogue = openai_file.parse(record, WHERE, Counter())
    except InputError as e:
        raise ApiError.from_input(_shifted(e, len(body["messages"]) - len(messages))) from None
    names = {t.name for t in known_tools}
    for i, tool in enumerate(dialogue.tools):
        if tool.name not in names:
            raise ApiError(400, f"this model knows only {', '.join(sorted(names))}, not {tool.name!r}",
                           param=f"tools[{i}]", code="unsupported_value")
    if not isinstance(dialogue.turns[-1], (User, Result)):
        raise ApiError(400, "the last message must be a user or tool message (the model answers it)",
                       param=f"messages[{len(body['messages']) - 1}]")
    execute = execute_tools or choice == "none" or not dialogue.tools
    return ChatRequest(dialogue.turns, bool(stream), execute, dataclasses.replace(options, system=system),
                       bool(usage and usage.get("include_usage")))


def _shifted(e: InputError, by: int) -> InputError:
    """An error about `messages[i]` of the messages after the system ones, renumbered as the client sent them."""
    field = e.field
    if by and field and field.startswith("messages["):
        index, _, rest = field[len("messages["):].partition("]")
        if index.isdigit():
            field = f"messages[{int(index) + by}]{rest}"
    return InputError(e.message, where=e.where, field=field)


# ---- responses ---------------------------------------------------------------------------------------------------

def _message(exchange: Exchange, executed: bool, call_id: str | None = None) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason an exchange ends with. Without a reply the exchange ends with a call
    that was not run: the client's to run, or (`executed`: the server runs calls) one past the server's bound,
    answered as an empty message with finish_reason "length". A reply cut at its token limit ends with "length"."""
    if exchange.reply is not None:
        return {"role": "assistant", "content": exchange.reply}, "length" if exchange.hit_limit else "stop"
    if executed:
        return {"role": "assistant", "content": ""}, "length"
    last: Search = exchange.searches[-1]
    call = {"id": call_id or new_call_id(), "type": "function",
            "function": {"name": last.call.name, "arguments": json.dumps(last.call.arguments, ensure_ascii=False)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def usage(exchange: Exchange) -> dict[str, int]:
    return {"prompt_tokens": exchange.prompt_tokens, "completion_tokens": exchange.completion_tokens,
            "total_tokens": exchange.prompt_tokens + exchange.completion_tokens}


def completion(exchange: Exchange, model: str, executed: bool, id: str | None = None,
               call_id: str | None = None) -> dict[str, Any]:
    """A `chat.completion` object for the exchange (`executed`: the server ran the model's calls; `id`: the
    completion id, which feedback on it names; a new one when None; `call_id`: the id of the call it returns)."""
    message, finish = _message(exchange, executed, call_id)
    return {"id": id or new_completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage(exchange)}


class ChunkStream:
    """The server-sent events of one streamed completion, written as its turn is generated: a role chunk, then
    content deltas (a reply) or the call's header and argument deltas (a call the client runs) as
    `ChatFormat.partial` reads them, then what the finished exchange adds, a finish chunk, [DONE].

    A partial read is always a prefix of the finished turn, except when the model's call turns out unreadable after
    some of its arguments were sent: the stream then ends with an OpenAI error event (code "malformed_call") instead
    of a finish chunk; the `openai` client raises it."""

    def __init__(self, id: str, model: str, executed: bool, include_usage: bool = False):
        self.id, self.model, self.executed, self.include_usage = id, model, executed, include_usage
        self.created = int(time.time())
        self.content = ""
        """Reply text sent so far."""
        self.arguments: str | None = None
        """Call arguments sent so far (None: no call header sent)."""
        self.call_id = new_call_id()
        self.name = ""

    def _event(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None else [],
                **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def start(self) -> str:
        return self._event({"role": "assistant", "content": ""})

    def partial(self, kind: str, text: str, name: str) -> list[str]:
        """Events for a turn read so far (`kind` "reply" or "call"; `name`: the tool a call would call)."""
        if kind == "reply" and text.startswith(self.content) and len(text) > len(self.content):
            delta, self.content = text[len(self.content):], text
            return [self._event({"content": delta})]
        if kind != "call" or self.executed or self.content:
            return []
        out = []
        if self.arguments is None:
            self.arguments, self.name = "", name
            out.append(self._event({"tool_calls": [{"index": 0, "id": self.call_id, "type": "function",
                                                    "function": {"name": name, "arguments": ""}}]}))
        if text.startswith(self.arguments) and len(text) > len(self.arguments):
            delta, self.arguments = text[len(self.arguments):], text
            out.append(self._event({"tool_calls": [{"index": 0, "function": {"arguments": delta}}]}))
        return out

    def finish(self, full: dict[str, Any]) -> list[str]:
        """The events that complete the stream for the finished completion `full` (made with this call id)."""
        choice = full["choices"][0]
        message = choice["message"]
        out = []
        text = message.get("content") or ""
        calls = message.get("tool_calls") or []
        if not text.startswith(self.content) or (self.arguments is not None and (
                not calls or calls[0]["function"]["name"] != self.name
                or not calls[0]["function"]["arguments"].startswith(self.arguments))):
            error = ApiError(500, "the model's turn could not be read after part of it was streamed; ask again",
                             type="server_error", code="malformed_call")
            return [f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n", "data: [DONE]\n\n"]
        if len(text) > len(self.content):
            out.append(self._event({"content": text[len(self.content):]}))
        for call in calls:
            if self.arguments is None:
                out.append(self._event({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                                        "function": {"name": call["function"]["name"],
                                                                     "arguments": ""}}]}))
                self.arguments = ""
            rest = call["function"]["arguments"][len(self.arguments):]
            if rest:
                out.append(self._event({"tool_calls": [{"index": 0, "function": {"arguments": rest}}]}))
        out.append(self._event({}, choice["finish_reason"]))
        if self.include_usage:
            out.append(self._event(None, usage=full["usage"]))
        out.append("data: [DONE]\n\n")
        return out


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
