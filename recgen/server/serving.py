"""What the endpoints do, apart from HTTP: admission (429), one LM worker thread, timeouts (504), and the
chat / structured recommendation logic.

The language model is not thread-safe and saturates the CPU on its own, so every recommender call runs on
one worker thread (a single-worker executor, plus a lock in case the recommender is shared) while the event
loop stays free for health checks, streaming and rejecting excess load. ``max_concurrency`` requests may be
admitted at once (one running, the rest queued); the next one gets 429 straight away. A request is also
refused with 429 when the queue ahead of it, at the recent time per call, would outlast ``timeout``: a
prompt "retry later" instead of a 504 after the client has waited the whole timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..batch.requests import served_model_names
from ..chat.state import ChatContext
from ..chat.turn import ChatReply, chat_turn
from ..errors import InvalidRequestError
from ..lm.adapters import UnknownAdapterError
from ..lm.resolve import DEFAULT_LM
from ..text import message_text
from ..types import RecommendRequest
from .protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    RecgenChatOptions,
    RecommendationsRequest,
    RecommendationsResponse,
    Usage,
    _id,
)

log = logging.getLogger(__name__)
#: Admit a request only if the queue ahead of it is expected to take at most this share of ``timeout``.
QUEUE_TIME_SHARE = 0.8


@dataclass
class ServerSettings:
    """Limits and identity of one server. Defaults suit one CPU box serving a handful of users."""

    api_key: str | None = None
    max_concurrency: int = 16          # requests admitted at once (running + queued); beyond → 429
    timeout: float = 120.0             # seconds per request, queueing included; beyond → 504
    max_body_bytes: int = 1_000_000    # beyond → 413
    max_message_chars: int = 4000      # per chat message; beyond → 400
    max_messages: int = 200            # per chat request; beyond → 400
    served_model_name: str = "recgen"


class APIError(Exception):
    """An error the client caused or must handle, rendered in OpenAI's error shape with ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class RecgenServing:
    """Holds the recommender, the dataset (for ``user`` ids), the settings and the LM worker."""

    def __init__(self, recommender, dataset=None, settings: ServerSettings | None = None):
        self.recommender = recommender
        self.dataset = dataset
        self.settings = settings or ServerSettings()
        self.context = ChatContext.from_catalog(recommender.catalog)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recgen-lm")
        self._lm_lock = threading.Lock()
        self._admit_lock = threading.Lock()
        self._in_flight = 0
        self.counters = {"served": 0, "rejected_busy": 0, "rejected_queue_too_long": 0, "timed_out": 0, "failed": 0}
        self.call_seconds: float | None = None  # moving average of one worker call, for admission
        self.started = time.time()

    # -- identity ------------------------------------------------------------------------------------
    @property
    def lm_name(self) -> str:
        return self.recommender.config.lm.model or DEFAULT_LM

    @property
    def adapter_name(self) -> str | None:
        adapter = self.recommender.config.lm.adapter
        return Path(adapter).name if adapter else None

    def models(self) -> ModelList:
        name = self.settings.served_model_name
        cards = [ModelCard(id=name, root=self.lm_name, created=int(self.started))]
        if self.adapter_name and self.recommender.config.lm.adapter not in self.recommender.config.lm.adapters:
            cards.append(ModelCard(id=self.adapter_name, root=str(self.recommender.config.lm.adapter), parent=name,
                                   created=int(self.started)))
        cards += [ModelCard(id=adapter, root=str(path), parent=name, created=int(self.started))  # named LoRA adapters
                  for adapter, path in self.recommender.config.lm.adapters.items()]
        return ModelList(data=cards)

    def check_model(self, model: str) -> None:
        known = served_model_names(self.recommender.config, self.settings.served_model_name)
        if model not in known:
            raise APIError(404, f"model {model!r} is not served here; use one of: {', '.join(known[:-1])} "
                                "(GET /v1/models)", type="not_found_error", code="model_not_found", param="model")

    def health(self) -> dict:
        return {"status": "ok", "model": self.settings.served_model_name, "lm": self.lm_name,
                "adapter": self.recommender.config.lm.adapter, "items": len(self.recommender.catalog),
                "dataset": getattr(self.dataset, "name", None), "in_flight": self._in_flight,
                "max_concurrency": self.settings.max_concurrency, "uptime_s": round(time.time() - self.started, 1),
                **self.counters}

    # -- the LM worker ---------------------------------------------------------------------------------
    def submit(self, fn: Callable, *args, **kwargs) -> asyncio.Task:
        """Admit a call (or raise 429) and queue it for the worker; the returned task raises 504 on timeout."""
        with self._admit_lock:
            if self._in_flight >= self.settings.max_concurrency:
                self.counters["rejected_busy"] += 1
                raise APIError(429, f"the server is busy: {self._in_flight} requests are running or queued "
                                    f"(--max-concurrency {self.settings.max_concurrency}); retry shortly",
                               type="rate_limit_error", code="server_busy", headers={"Retry-After": "1"})
            expected = (self._in_flight + 1) * (self.call_seconds or 0.0)
            if self._in_flight and expected > QUEUE_TIME_SHARE * self.settings.timeout:
                self.counters["rejected_queue_too_long"] += 1
                raise APIError(429, f"the server is busy: {self._in_flight} requests are queued, about "
                                    f"{expected:.0f} s of work, more than the {self.settings.timeout:g} s timeout; "
                                    "retry shortly", type="rate_limit_error", code="server_busy",
                               headers={"Retry-After": str(max(1, math.ceil(self.call_seconds or 1)))})
            self._in_flight += 1

        def job():
            with self._lm_lock:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._record_call(time.perf_counter() - start)

        try:
            future = self._executor.submit(job)
        except RuntimeError:  # executor shut down
            self._release(None)
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        future.add_done_callback(self._release)
        task = asyncio.get_running_loop().create_task(self._await(future))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception never retrieved"
        return task

    def _record_call(self, took: float) -> None:
        """Time per call for admission: up at once to a slower call, down slowly (calls differ: chat with
        reasons is slower than a bare ranking, so an average alone let a mixed queue outlast the timeout)."""
        if self.call_seconds is None or took > self.call_seconds:
            self.call_seconds = took
        else:
            self.call_seconds = 0.9 * self.call_seconds + 0.1 * took

    def _release(self, _future: Future | None) -> None:
        with self._admit_lock:
            self._in_flight -= 1

    async def _await(self, future: Future):
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()  # frees the slot at once if it had not started; a running call finishes alone
            self.counters["timed_out"] += 1
            raise APIError(504, f"the request took longer than {self.settings.timeout:g} s (--timeout); the server "
                                "may be overloaded", type="timeout_error", code="timeout") from None

    def start(self) -> None:
        """A fresh LM worker if an earlier lifespan shut it down (the same app may be started again, as
        test clients and schema fuzzers do), so no request gets 503 from a previous shutdown."""
        if self._executor._shutdown:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recgen-lm")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- structured recommendations --------------------------------------------------------------------
    def history_for(self, user: str) -> list[str]:
        if self.dataset is None:
            raise InvalidRequestError("this server was started without a dataset, so `user` ids cannot be "
                                      "resolved; send `history` (item ids) instead")
        return list(self.dataset.history(user))

    async def recommendations(self, request: RecommendationsRequest) -> RecommendationsResponse:
        history, exclude = list(request.history or []), list(request.exclude or [])
        adapter = request.adapter
        if request.model is not None:
            self.check_model(request.model)
            if adapter is None and request.model in self.recommender.config.lm.adapters:
                adapter = request.model  # as on the chat route: a named adapter's model name selects it
        if request.user is not None:
            history = self.history_for(request.user) + history
            exclude += self.recommender.rejected(request.user)  # the feedback loop's rejected items
        inner = RecommendRequest(**{**request.model_dump(exclude={"user", "model"}), "history": history,
                                    "exclude": exclude or None, "adapter": adapter})

        def work():
            start = time.perf_counter()
            recs = self.recommender.recommend_batch([inner])[0]
            return recs, time.perf_counter() - start

        recs, seconds = await self.submit(work)
        self.counters["served"] += 1
        return RecommendationsResponse(model=self.settings.served_model_name, user=request.user,
                                       query=request.query, mode=request.mode, seconds=round(seconds, 3),
                                       recommendations=recs, unused_words=list(recs.unused_words))

    # -- chat ------------------------------------------------------------------------------------------
    def _validate_chat(self, request: ChatCompletionRequest) -> tuple[list[dict], list[str], list[str], str | None]:
        self.check_model(request.model)
        if request.n != 1:
            raise APIError(400, "only n=1 is supported: one reply with the ranked items", param="n")
        if len(request.messages) > self.settings.max_messages:
            raise APIError(400, f"{len(request.messages)} messages; the limit is {self.settings.max_messages}",
                           param="messages", code="too_many_messages")
        messages = []
        for number, message in enumerate(request.messages):
            text = message_text(message.content)
            # Assistant messages are our own earlier replies (long lists with reasons): only the body limit applies.
            if message.role != "assistant" and len(text) > self.settings.max_message_chars:
                raise APIError(400, f"message {number} is {len(text)} characters; the limit is "
                                    f"{self.settings.max_message_chars} (--max-message-chars)",
                               param=f"messages[{number}].content", code="message_too_long")
            messages.append({"role": message.role, "content": text})
        if not any(m["role"] == "user" for m in messages):
            raise APIError(400, "messages must contain at least one message with role 'user'", param="messages")
        options = request.recgen or RecgenChatOptions()
        history: list[str] = []
        notes: list[str] = []
        who = None
        if options.user_id is not None:
            history = self.history_for(options.user_id)
            who = f"user {options.user_id}"
        elif request.user is not None and self.dataset is not None:
            if request.user in self.dataset.sequences:
                history = list(self.dataset.history(request.user))
                who = f"user {request.user}"
            else:
                notes.append(f"User {request.user!r} is not in the dataset, so these picks are not personalised.")
        extra = [str(i) for i in options.history or []]
        _, unknown = self.recommender.catalog.known(extra)
        if unknown:
            raise APIError(400, f"recgen.history has item id(s) not in the catalog: {', '.join(map(repr, unknown[:10]))}",
                           param="recgen.history", code="unknown_item")
        return messages, history + extra, notes, who

    def submit_chat(self, request: ChatCompletionRequest) -> asyncio.Task:
        """Validate (raising 4xx before anything is queued or streamed) and queue one chat turn."""
        messages, history, notes, who = self._validate_chat(request)
        options = request.recgen or RecgenChatOptions()
        adapter = request.model if request.model in self.recommender.config.lm.adapters else None  # OpenAI `model`
        return self.submit(chat_turn, self.recommender, self.context, messages,
                           history=history, k=options.k, mode=options.mode, reasons=options.reasons, who=who,
                           extra_notes=notes, adapter=adapter)

    def _extras(self, reply: ChatReply) -> dict[str, Any]:
        return {**reply.state.as_dict(), "notes": reply.notes, "query": reply.query}

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        reply: ChatReply = await self.submit_chat(request)
        self.counters["served"] += 1
        return ChatCompletionResponse(
            model=request.model, choices=[ChatChoice(message=ChatResponseMessage(content=reply.text))],
            usage=Usage(), recommendations=reply.recommendations, recgen=self._extras(reply),
            unused_words=list(reply.unused_words),
        )

    async def chat_stream(self, request: ChatCompletionRequest, task: asyncio.Task) -> AsyncIterator[str]:
        """Server-sent events in OpenAI's ``chat.completion.chunk`` shape, one line of the reply per chunk,
        the structured items on the last chunk, then ``data: [DONE]``. Errors become an ``error`` event."""
        chunk_id, created = _id("chatcmpl"), int(time.time())

        def event(choices: list[ChunkChoice], **extra) -> str:
            chunk = ChatCompletionChunk(id=chunk_id, created=created, model=request.model, choices=choices, **extra)
            return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

        yield event([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        try:
            reply: ChatReply = await task
        except APIError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
            return
        except Exception as exc:  # noqa: BLE001 - the stream has started; report instead of dropping it
            from ..errors import RecgenError

            if not isinstance(exc, RecgenError):
                log.exception("chat stream failed")
                self.counters["failed"] += 1
            yield f"data: {json.dumps(error_body(exc))}\n\n"
            return
        self.counters["served"] += 1
        lines = reply.text.split("\n")
        for number, line in enumerate(lines):
            text = line + ("\n" if number < len(lines) - 1 else "")
            yield event([ChunkChoice(delta=DeltaMessage(content=text))])
        yield event([ChunkChoice(delta=DeltaMessage(), finish_reason="stop")],
                    recommendations=reply.recommendations, recgen=self._extras(reply),
                    unused_words=list(reply.unused_words))
        if (request.stream_options or {}).get("include_usage"):
            yield event([], usage=Usage())
        yield "data: [DONE]\n\n"


def error_status(exc: Exception) -> int:
    from ..errors import RecgenError, UnknownUserError

    if isinstance(exc, APIError):
        return exc.status
    if isinstance(exc, (UnknownUserError, UnknownAdapterError)):
        return 404
    if isinstance(exc, RecgenError):
        return 400
    return 500


def error_body(exc: Exception) -> dict:
    from ..errors import RecgenError, UnknownUserError

    if isinstance(exc, APIError):
        return exc.body()
    if isinstance(exc, UnknownUserError):
        return APIError(404, str(exc), type="not_found_error", code="unknown_user").body()
    if isinstance(exc, UnknownAdapterError):
        return APIError(404, str(exc), type="not_found_error", code="model_not_found", param="adapter").body()
    if isinstance(exc, RecgenError):
        return APIError(400, str(exc), code=type(exc).__name__).body()
    return APIError(500, "internal server error (see the server log)", type="server_error").body()
