"""`tooltune serve`: an OpenAI-compatible server and a web chat page over one policy and the local hotel database.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (see `tooltune.bot.api` for what is supported), `POST
/v1/feedback` (a rating or correction of a turn a completion wrote), `GET /` (the web page) and `POST /api/chat` (the
page's endpoint: runs the searches itself and returns the calls, the hotels found and the reply; with `"stream":
true` it sends the reply's text as it is generated, then the whole answer). Every error is an OpenAI error body
`{"error": {"message", "type", "param", "code"}}`: a 4xx for a bad request (404 for an unknown completion id, 413
for a body over `max_body_bytes`), 401 for a missing or wrong API key, 503 with `Retry-After` when `max_queue`
requests are already in progress, 500 when generation fails (the server keeps serving).

Concurrency: the server is stateless (the client sends the whole conversation). Reading, parsing and checking a
request and rendering and tokenizing its prompt run in the request's worker thread; only the decoding is shared. A
`GeneratorPolicy` is served by `tooltune.bot.engine.BatchingPolicy` (`scheduler="batch"`): one scheduler thread
decodes the turns waiting together, in batches (dynamic batching); `scheduler="lock"` keeps the older one lock
around the model (turns one at a time; the load benchmark's baseline). Any other policy is called under one lock
unless it says it is `thread_safe`. Streaming is real: chunks leave as the model writes tokens.

Feedback (`feedback`, a `tooltune.feedback.FeedbackStore`; None: off): every completion is queued for the store's
writer thread after the generation, outside the lock, and the response never waits on it.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations (`Request`,
# imported inside create_app) at runtime.

import asyncio
import dataclasses
import hmac
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from tooltune.bot.admission import Admission
from tooltune.bot.api import (ApiError, ChunkStream, completion, decode_body, feedback_answer, new_completion_id,
                              parse_chat_request, parse_feedback, web_answer)
from tooltune.bot.engine import BatchingPolicy
from tooltune.bot.policy import GeneratorPolicy, LockedPolicy, Policy, TurnOptions
from tooltune.bot.session import Session, SessionConfig
from tooltune.dialogue import HOTEL_TOOL, Tool
from tooltune.errors import InputError, ToolTuneError
from tooltune.feedback import UnknownCompletion
from tooltune.formats import SampleTooLong

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WEB_PAGE = Path(__file__).with_name("web") / "index.html"
log = logging.getLogger("tooltune.serve")


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key: anyone who can reach the port could use the model.
    A key of whitespace alone is no key (a client cannot send it: the header's value is trimmed)."""
    if api_key is not None and not api_key.strip():
        raise ToolTuneError("--api-key is empty or whitespace: give a real key")
    if host not in LOCAL_HOSTS and not api_key:
        raise ToolTuneError(f"refusing to listen on {host} without an API key: anyone who can reach it could use the "
                            f"model. Give --api-key KEY (clients send 'Authorization: Bearer KEY'), or bind to "
                            f"127.0.0.1")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    model_name: str = "tooltune"
    """The model id `/v1/models` lists and responses carry (a request's `model` is not checked: one model here)."""
    api_key: str | None = None
    """When set, /v1 and /api requests need `Authorization: Bearer <key>`; the page itself is public."""
    execute_tools: bool = False
    """Run every call on the local database and answer with the final reply (never return tool_calls)."""
    session: SessionConfig = SessionConfig()
    """Searches per request and hotels per search when the server runs calls."""
    tools: tuple[Tool, ...] = (HOTEL_TOOL,)
    """Tools the model was trained with; a request may declare only these."""
    run: str = ""
    """The run that answers, as the feedback store records it with each completion (default: `model_name`)."""
    max_body_bytes: int = 1 << 20
    """Request bodies over this many bytes are refused (413) before they are read whole."""
    max_queue: int = 32
    """Chat requests in progress at once (generating or waiting for the model); one more gets a 503 with
    Retry-After."""
    max_batch: int = 8
    """Turns decoded together at most (`BatchingPolicy`)."""
    scheduler: str = "batch"
    """"batch": a `GeneratorPolicy` is batched by `BatchingPolicy`; "lock": one turn at a time under one lock."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_queue", "max_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, not {getattr(self, name)}", field=name)
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}", field="scheduler")


SCHEDULERS = ("batch", "lock")


def shared_policy(policy: Policy, config: ServerConfig) -> Policy:
    """The policy the server's threads call: batched, or behind one lock (see the module's docstring)."""
    if isinstance(policy, GeneratorPolicy) and config.scheduler == "batch":
        return BatchingPolicy(policy.generator, name=policy.name, max_batch=config.max_batch)
    if getattr(policy, "thread_safe", False):
        return policy
    return LockedPolicy(policy)


def create_app(policy: Policy, db: Any, config: ServerConfig = ServerConfig(), feedback: Any = None):
    """The FastAPI app; `feedback`: a `tooltune.feedback.FeedbackStore` that records every completion and takes
    feedback at /v1/feedback, or None (off). The routes are FastAPI's wiring; `Handlers` does their work."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse
    from starlette.exceptions import HTTPException

    handlers = Handlers(policy, db, config, feedback)
    app = FastAPI(title="tooltune", docs_url=None, redoc_url=None, openapi_url=None,
                  on_shutdown=[getattr(handlers.shared, "close", lambda: None)])
    app.state.policy = handlers.shared
    app.state.disconnects = 0
    """Streaming clients that went away before their answer was done (their turns stopped)."""
    handlers.state = app.state
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

    @app.get("/v1/models")
    async def models(request: Request):
        return handlers.models(request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handlers.chat_completions(request)

    @app.post("/api/chat")
    async def web_chat(request: Request):
        return await handlers.web_chat(request)

    @app.post("/v1/feedback")
    async def post_feedback(request: Request):
        return await handlers.post_feedback(request)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(WEB_PAGE.read_text(encoding="utf-8"))

    return app


async def api_error(request: Any, e: ApiError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def http_error(request: Any, e: Any):  # unknown route, wrong method
    from fastapi.responses import JSONResponse

    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
    return JSONResponse(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                 code=code).body(), status_code=e.status_code)


async def unexpected(request: Any, e: Exception):  # a bug: still OpenAI's body, and logged
    from fastapi.responses import JSONResponse

    log.exception("unexpected error")
    return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}: {e}", type="server_error",
                                 code="internal_error").body(), status_code=500)


class Handlers:
    """What the app's routes do: check the key, read and check the request, hold a place in the queue, run the
    session in a worker thread (streamed or not), record the completion, answer."""

    def __init__(self, policy: Policy, db: Any, config: ServerConfig, feedback: Any):
        self.shared = shared_policy(policy, config)
        self.db, self.config, self.feedback = db, config, feedback
        self.state: Any = None
        """The app's state (`disconnects` is counted there)."""
        self.created = int(time.time())
        self.admission = Admission(config.max_queue, config.max_batch)
        self.tool_name = config.tools[0].name
        self.max_new_tokens = getattr(self.shared, "max_new_tokens", None)
        self.run_name = config.run or config.model_name

    def authorize(self, request: Any) -> None:
        if self.config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.config.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    async def read_body(self, request: Any) -> bytes:
        """The body, refused (413) as soon as it is known to be over the limit: from Content-Length, or while read."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise body_too_large(limit)
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise body_too_large(limit)
            parts.append(part)
        return b"".join(parts)

    def converse(self, history, execute: bool, options: TurnOptions):
        """Run the session in a worker thread; InputError -> 400, anything else -> 500 (logged), never a crash."""
        session_config = self.config.session if execute else dataclasses.replace(self.config.session, max_calls=0)
        session = Session(self.shared, self.db, session_config, history=history, options=options)
        try:
            exchange = session.respond()
        except SampleTooLong as e:  # OpenAI's answer to a conversation over the context window
            raise ApiError(400, f"the conversation is too long for the model: {e.message}", param="messages",
                           code="context_length_exceeded") from None
        except InputError as e:
            raise ApiError.from_input(e) from None
        except Exception as e:  # a failing generation: report it and keep serving
            log.exception("generation failed")
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error",
                           code="generation_failed") from None
        return session, exchange

    def models(self, request: Any) -> dict:
        self.authorize(request)
        return {"object": "list", "data": [{"id": self.config.model_name, "object": "model", "created": self.created,
                                            "owned_by": "tooltune"}]}

    def record(self, completion_id: str, history, exchange, source: str) -> None:
        if self.feedback is not None:  # queued: the writer thread stores it, the response does not wait
            self.feedback.record(completion_id, history, exchange.turns, self.run_name, source, self.config.tools)

    async def streamed(self, request, req, on_event, finish, ticket, prefix=()):
        """Run the exchange, handing each partial read of the turn being written to `on_event` (returns the SSE
        text to send) as it comes; `finish(session, exchange)` gives the last events (after `prefix`). An error
        before the first event is an HTTP error; after it, an error event. The admission `ticket` is given back
        when the work ends; a client that disconnects stops its turn at the next token."""
        from fastapi.responses import StreamingResponse
        from starlette.background import BackgroundTask

        stream = _Stream(self, request, req, ticket)
        first = asyncio.ensure_future(stream.events.get())
        await asyncio.wait({stream.work, first}, return_when=asyncio.FIRST_COMPLETED)
        if stream.work.done() and stream.work.exception() is not None and not first.done():
            first.cancel()
            stream.gone.set()
            raise stream.work.exception()
        ticket.handed_over()
        return StreamingResponse(stream.body(first, on_event, finish, prefix), media_type="text/event-stream",
                                 background=BackgroundTask(ticket.release))

    async def chat_completions(self, request: Any):
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool

        self.authorize(request)
        raw = await self.read_body(request)
        config = self.config
        req = await run_in_threadpool(lambda: parse_chat_request(decode_body(raw), config.tools,
                                                                 config.execute_tools, self.max_new_tokens))
        with self.admission.enter() as admitted:  # a bad request got its 400 above, whatever the queue
            completion_id = new_completion_id()
            if req.stream:
                stream = ChunkStream(completion_id, config.model_name, req.execute, req.include_usage)

                def finish(session, exchange):
                    self.record(completion_id, req.history, exchange, "api")
                    full = completion(exchange, config.model_name, req.execute, completion_id, stream.call_id)
                    return stream.finish(full)

                def on_event(kind, text):
                    return "".join(stream.partial(kind, text, self.tool_name))

                return await self.streamed(request, req, on_event, finish, admitted, [stream.start()])
            _, exchange = await run_in_threadpool(self.converse, req.history, req.execute, req.options)
            self.record(completion_id, req.history, exchange, "api")
            return JSONResponse(completion(exchange, config.model_name, req.execute, completion_id))

    async def web_chat(self, request: Any):
        from starlette.concurrency import run_in_threadpool

        self.authorize(request)
        raw = await self.read_body(request)
        body = await run_in_threadpool(decode_body, raw)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "'stream' must be a boolean", param="stream")
        req = await run_in_threadpool(parse_chat_request, {"messages": body.get("messages")}, self.config.tools, True)
        with self.admission.enter() as admitted:
            completion_id = new_completion_id()

            def answer(session, exchange):
                self.record(completion_id, req.history, exchange, "web")
                return web_answer(exchange, session.history, self.config.tools,
                                  completion_id if self.feedback is not None else None)

            if stream:  # {"reply": text so far} or {"call": arguments so far} as generated, then {"answer": ...}
                def on_event(kind, text):
                    return f"data: {json.dumps({kind: text}, ensure_ascii=False)}\n\n"

                def finish(session, exchange):
                    done = json.dumps({"answer": answer(session, exchange)}, ensure_ascii=False)
                    return [f"data: {done}\n\n", "data: [DONE]\n\n"]

                return await self.streamed(request, req, on_event, finish, admitted)
            session, exchange = await run_in_threadpool(self.converse, req.history, True, req.options)
            return answer(session, exchange)

    def rate(self, req):
        try:
            return self.feedback.rate(req.completion_id, req.turn, req.rating, req.correction)
        except UnknownCompletion as e:
            raise ApiError(404, e.message, param="completion_id", code="not_found") from None
        except InputError as e:
            raise ApiError.from_input(e) from None
        except Exception as e:  # the store failed (a full disk, a locked file): say so, keep serving
            log.exception("storing feedback failed")
            raise ApiError(500, f"storing feedback failed: {type(e).__name__}: {e}", type="server_error",
                           code="feedback_failed") from None

    async def post_feedback(self, request: Any):
        from starlette.concurrency import run_in_threadpool

        self.authorize(request)
        if self.feedback is None:
            raise ApiError(404, "feedback is off on this server (it was started with --no-feedback)",
                           code="feedback_disabled")
        req = parse_feedback(decode_body(await self.read_body(request)))
        return feedback_answer(await run_in_threadpool(self.rate, req))


class _Stream:
    """One streamed exchange: the session runs in a worker thread and hands partial reads of the turn being written
    to `events`; a watcher notices the client going away (`gone`), which stops the turn at its next token."""

    def __init__(self, handlers: Handlers, request: Any, req: Any, ticket: Any):
        from starlette.concurrency import run_in_threadpool

        self.handlers, self.request, self.ticket = handlers, request, ticket
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.gone = threading.Event()
        options = dataclasses.replace(req.options, on_partial=self.on_partial)
        self.work = asyncio.ensure_future(run_in_threadpool(handlers.converse, req.history, req.execute, options))
        self.work.add_done_callback(lambda _: ticket.release())  # the place is the model's work, whether or not
        # the client is still reading (a client that went away does not always finalize the response's generator)
        watcher = asyncio.ensure_future(self.watch())
        self.work.add_done_callback(lambda _: watcher.cancel())

    def on_partial(self, kind: str, text: str) -> bool:
        if self.gone.is_set():
            return False  # the client went away: the row stops
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, text))
        return True

    async def watch(self) -> None:
        """The body was read whole: what the client sends next is its disconnect."""
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self.gone.set()
        self.handlers.state.disconnects += 1

    async def body(self, first, on_event, finish, prefix):
        """The response's events: `prefix`, each partial read as `on_event` renders it, then `finish`'s (or an error
        event)."""
        try:
            for text in prefix:
                yield text
            pending = first
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(self.events.get())
                await asyncio.wait({self.work, pending}, return_when=asyncio.FIRST_COMPLETED)
                if not pending.done():
                    break
                text = on_event(*pending.result())
                pending = None
                if text:
                    yield text
            pending.cancel()
            while not self.events.empty():
                text = on_event(*self.events.get_nowait())
                if text:
                    yield text
            try:
                session, exchange = await self.work
            except ApiError as e:
                yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
                return
            for text in finish(session, exchange):
                yield text
        finally:
            self.gone.set()
            self.ticket.release()


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over this server's limit of {limit} bytes", code="body_too_large")


def serve(app: Any, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
