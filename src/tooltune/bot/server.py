"""`tooltune serve`: an OpenAI-compatible server and a web chat page over one policy and the local hotel database.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (see `tooltune.bot.api` for what is supported), `POST
/v1/feedback` (a rating or correction of a turn a completion wrote), `GET /` (the web page) and `POST /api/chat` (the
page's endpoint: runs the searches itself and returns the calls, the hotels found and the reply). Every error is an
OpenAI error body `{"error": {"message", "type", "param", "code"}}`: a 4xx for a bad request (404 for an unknown
completion id), 401 for a missing or wrong API key, 500 when generation fails (the server keeps serving).

Concurrency: the server is stateless (the client sends the whole conversation); requests run in the thread pool and
the policy is wrapped in `LockedPolicy`, one lock: generations run one at a time, in the order threads get the
lock, while parsing, database searches and sending overlap. The database gives each thread its own connection.

Feedback (`feedback`, a `tooltune.feedback.FeedbackStore`; None: off): every completion is queued for the store's
writer thread after the generation, outside the lock, and the response never waits on it.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations (`Request`,
# imported inside create_app) at runtime.

import dataclasses
import hmac
import logging
import time
from pathlib import Path
from typing import Any

from tooltune.bot.api import (ApiError, chunks, completion, decode_body, feedback_answer, new_completion_id,
                              parse_chat_request, parse_feedback, web_answer)
from tooltune.bot.policy import LockedPolicy, Policy
from tooltune.bot.session import Session, SessionConfig
from tooltune.dialogue import HOTEL_TOOL, Tool
from tooltune.errors import InputError, ToolTuneError
from tooltune.formats import SampleTooLong

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WEB_PAGE = Path(__file__).with_name("web") / "index.html"
log = logging.getLogger("tooltune.serve")


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key: anyone who can reach the port could use the model."""
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


def create_app(policy: Policy, db: Any, config: ServerConfig = ServerConfig(), feedback: Any = None):
    """The FastAPI app; `feedback`: a `tooltune.feedback.FeedbackStore` that records every completion and takes
    feedback at /v1/feedback, or None (off)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="tooltune", docs_url=None, redoc_url=None, openapi_url=None)
    locked = LockedPolicy(policy)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):  # unknown route, wrong method
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                     code=code).body(), status_code=e.status_code)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or incorrect API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    def converse(history, execute: bool):
        """Run the session in a worker thread; InputError -> 400, anything else -> 500 (logged), never a crash."""
        session_config = config.session if execute else dataclasses.replace(config.session, max_calls=0)
        session = Session(locked, db, session_config, history=history)
        try:
            exchange = session.respond()
        except SampleTooLong as e:  # OpenAI's answer to a conversation over the context window
            raise ApiError(400, f"the conversation is too long for the model: {e}", param="messages",
                           code="context_length_exceeded") from None
        except InputError as e:
            raise ApiError.from_input(e) from None
        except Exception as e:  # a failing generation: report it and keep serving
            log.exception("generation failed")
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error",
                           code="generation_failed") from None
        return session, exchange

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": created,
                                            "owned_by": "tooltune"}]}

    run_name = config.run or config.model_name

    def record(completion_id: str, history, exchange, source: str) -> None:
        if feedback is not None:  # queued: the writer thread stores it, the response does not wait
            feedback.record(completion_id, history, exchange.turns, run_name, source, config.tools)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = decode_body(await request.body())
        req = parse_chat_request(body, config.tools, config.execute_tools)
        _, exchange = await run_in_threadpool(converse, req.history, req.execute)
        completion_id = new_completion_id()
        record(completion_id, req.history, exchange, "api")
        full = completion(exchange, config.model_name, req.execute, completion_id)
        headers = {"X-Tooltune-Ignored": ",".join(req.ignored)} if req.ignored else {}
        if req.stream:
            return StreamingResponse(chunks(full), media_type="text/event-stream", headers=headers)
        return JSONResponse(full, headers=headers)

    @app.post("/api/chat")
    async def web_chat(request: Request):
        authorize(request)
        body = decode_body(await request.body())
        req = parse_chat_request({"messages": body.get("messages")}, config.tools, True)
        session, exchange = await run_in_threadpool(converse, req.history, True)
        completion_id = new_completion_id()
        record(completion_id, req.history, exchange, "web")
        return web_answer(exchange, session.history, config.tools, completion_id if feedback is not None else None)

    def rate(req):
        from tooltune.feedback import UnknownCompletion

        try:
            return feedback.rate(req.completion_id, req.turn, req.rating, req.correction)
        except UnknownCompletion as e:
            raise ApiError(404, e.message, param="completion_id", code="not_found") from None
        except InputError as e:
            raise ApiError.from_input(e) from None
        except Exception as e:  # the store failed (a full disk, a locked file): say so, keep serving
            log.exception("storing feedback failed")
            raise ApiError(500, f"storing feedback failed: {type(e).__name__}: {e}", type="server_error",
                           code="feedback_failed") from None

    @app.post("/v1/feedback")
    async def post_feedback(request: Request):
        authorize(request)
        if feedback is None:
            raise ApiError(404, "feedback is off on this server (it was started with --no-feedback)",
                           code="feedback_disabled")
        req = parse_feedback(decode_body(await request.body()))
        return feedback_answer(await run_in_threadpool(rate, req))

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(WEB_PAGE.read_text(encoding="utf-8"))

    return app


def serve(app: Any, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
