"""The FastAPI application: OpenAI-compatible chat, structured recommendations, models, health, a web page.

    app = create_app(recommender, dataset, ServerSettings(api_key="secret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Body size (413) and the bearer token (401) are checked by small ASGI middlewares before any route runs.

With an API key configured: ``/v1/*`` and ``/openapi.json`` need ``Authorization: Bearer <key>`` (the scheme
is case-insensitive); ``/docs`` and ``/redoc`` are not served (a browser cannot send the header, and the
schema is not public); ``/healthz`` answers ``{"status": "ok"}`` to anyone and its details (model, adapter
path, counters) only with the key; the page at ``/`` and its static files stay open.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RecgenError
from ..version import __version__
from . import feedback, items
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    ModelList,
    RecommendationsResponse,
    RecommendationsStreamRequest,
)
from .serving import APIError, RecgenServing, ServerSettings, error_body, error_status

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Paths that need the bearer token when one is configured (the page, its files and /healthz do not).
PROTECTED_PREFIX = "/v1/"
PROTECTED_PATHS = frozenset({"/openapi.json"})


def _json_error(send_status: int, body: dict, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": send_status, "headers": head}, raw


class _BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI's body parsing re-raises it unchanged."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request body is larger than {max_bytes} bytes (--max-body-bytes)")


class BodyLimitMiddleware:
    """413 for a body above ``max_bytes``: by Content-Length at once, or while reading a chunked body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = APIError(413, f"the request body is larger than {self.max_bytes} bytes (--max-body-bytes)",
                         code="body_too_large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._reject(send, error)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, error)

    @staticmethod
    async def _reject(send, error: APIError):
        start, raw = _json_error(error.status, error.body(), {"Connection": "close"})
        await send(start)
        await send({"type": "http.response.body", "body": raw})


def bearer_token_matches(authorization: bytes, api_key: str) -> bool:
    """``Authorization: Bearer <key>``; the scheme is case-insensitive (RFC 9110), the key compared in
    constant time."""
    scheme, _, token = authorization.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), api_key.encode())


def _authorization(scope) -> bytes:
    return dict(scope.get("headers", [])).get(b"authorization", b"")


class BearerAuthMiddleware:
    """401 on ``/v1/*`` and ``/openapi.json`` without ``Authorization: Bearer <api_key>``."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith(PROTECTED_PREFIX) or path in PROTECTED_PATHS):
            return await self.app(scope, receive, send)
        given = _authorization(scope)
        if bearer_token_matches(given, self.api_key):
            return await self.app(scope, receive, send)
        message = ("missing API key: send the header 'Authorization: Bearer <key>' (the key given to --api-key "
                   "or RECGEN_API_KEY)") if not given else "invalid API key"
        error = APIError(401, message, type="authentication_error", code="invalid_api_key")
        start, raw = _json_error(401, error.body(), {"WWW-Authenticate": "Bearer"})
        await send(start)
        await send({"type": "http.response.body", "body": raw})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        parts.append(f"{'.'.join(loc) or '(body)'}: {err.get('msg')}")
    return "; ".join(parts[:10])


def _errors(*statuses: int) -> dict:
    """OpenAPI entries for the error statuses a route can answer (all in OpenAI's error shape)."""
    return {status: {"model": ErrorResponse, "description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {400: "invalid request", 401: "missing or wrong API key", 404: "unknown model or user",
                  413: "body too large", 429: "busy: retry after Retry-After seconds", 500: "internal error",
                  503: "shutting down", 504: "took longer than --timeout"}
#: Statuses every route can answer: the middlewares (401, 413) and the catch-all handler (500).
_ANY = (401, 413, 500)


def create_app(recommender, dataset=None, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving ``recommender`` (and ``dataset`` for ``user`` ids) under ``settings``' limits."""
    settings = settings or ServerSettings()
    items.replay_added_items(recommender)  # items added over HTTP before a restart are served again
    serving = RecgenServing(recommender, dataset, settings)

    @asynccontextmanager
    async def lifespan(_app):
        serving.start()
        yield
        serving.shutdown()

    # Behind a key the interactive docs are off and the schema needs the key (see the module docstring).
    docs = {"docs_url": None, "redoc_url": None} if settings.api_key else {}
    app = FastAPI(title="recgen", version=__version__, lifespan=lifespan, **docs,
                  description="LLM-based generative recommender: ranked catalog items, each with a reason.")
    app.state.serving = serving

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RecgenError)
    async def _recgen_error(_request: Request, exc: RecgenError):
        return JSONResponse(error_body(exc), status_code=error_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        kinds = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}
        kind = kinds.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        code = "body_too_large" if exc.status_code == 413 else None
        return JSONResponse(APIError(exc.status_code, str(exc.detail), type=kind, code=code).body(),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse(APIError(400, _validation_message(exc)).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unexpected error")
        serving.counters["failed"] += 1
        return JSONResponse(error_body(exc), status_code=500)

    @app.get("/healthz", responses=_errors(413, 500))
    async def healthz(request: Request) -> dict:
        if settings.api_key and not bearer_token_matches(_authorization(request.scope), settings.api_key):
            return {"status": "ok"}  # liveness for anyone; the adapter path and counters only with the key
        return serving.health()

    @app.get("/v1/models", response_model=ModelList, responses=_errors(*_ANY))
    async def models() -> ModelList:
        return serving.models()

    sse = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    @app.post("/v1/recommendations", response_model=RecommendationsResponse,
              responses={200: {"content": {"text/event-stream": {}}}, **_errors(400, 404, 429, 503, 504, *_ANY)})
    async def recommendations(request: RecommendationsStreamRequest, http_request: Request):
        if not request.stream:
            return await serving.recommendations(request, http_request)
        start = time.perf_counter()
        inner = serving.recommend_request(request)
        task, pending = serving.start_recommendations(inner)  # 4xx/429 happen here, before the stream starts
        return StreamingResponse(serving.recommendations_stream(request, inner, task, pending, start, http_request),
                                 media_type="text/event-stream", headers=sse)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses={200: {"content": {"text/event-stream": {}}}, **_errors(400, 404, 429, 503, 504, *_ANY)})
    async def chat_completions(request: ChatCompletionRequest, http_request: Request):
        if not request.stream:
            return await serving.chat(request, http_request)
        start = time.perf_counter()
        task, pending = serving.start_chat(request)  # 4xx/429 happen here, before the stream starts
        return StreamingResponse(serving.chat_stream(request, task, pending, start, http_request),
                                 media_type="text/event-stream", headers=sse)

    app.include_router(items.router, responses=_errors(400, 429, 503, 504, *_ANY))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    feedback.register(app, serving)  # POST /v1/feedback, DELETE /v1/users/{id}

    # Added last = outermost: the body limit is checked first, then the token.
    if settings.api_key:
        app.add_middleware(BearerAuthMiddleware, api_key=settings.api_key)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
