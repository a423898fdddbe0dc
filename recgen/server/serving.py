"""What the endpoints do, apart from HTTP: lanes of work with their own admission (429), timeouts (504),
and the chat / structured recommendation logic.

Work that needs no language model (retrieval, the fused ranker, request filters, the popularity fallback,
adding items) runs in the **fast lane**, a small thread pool of its own, so it never waits behind LM work:
under mixed load a recommendation without reasons still takes milliseconds. A chat turn's ranking (also no
LM, but it reads the request and runs the request stage: several times a plain ranking) has a **chat lane**
of its own, so plain rankings never queue behind it. Work that needs the LM (reasons,
LM ranking, chat) runs in the **LM lane**, a pool with one thread per admitted request; those threads do
their own non-LM parts in parallel and block only inside LM calls, which the backend's
:class:`~recgen.lm.scheduler.LMScheduler` merges across requests into shared batches (one thread owns the
model, so it is never used concurrently). A recommendation with reasons is two steps: its items from the
fast lane, then its reasons from the LM lane under a :class:`~recgen.lm.scheduler.Ticket` carrying the
request's deadline; if the deadline passes first, the items are answered without reasons
(``reasons_missing``), never dropped, and the request's queued prompts leave the batch. The same happens
when the client goes away.

Each lane admits ``max_concurrency`` requests (running + queued); the next gets 429 straight away. A request
is also refused with 429 (with ``Retry-After``) when the lane's queue ahead of it would outlast ``timeout``
(the LM lane counts the prompts ahead at the scheduler's recent time per prompt, since its requests share
batches): a prompt "retry later" instead of a 504 after the client waited the whole timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np

from ..batch.requests import served_model_names
from ..chat.state import ChatContext
from ..chat.turn import ChatReply, chat_reasons, chat_turn
from ..errors import InvalidRequestError
from ..lm.adapters import UnknownAdapterError, unserved_adapter
from ..lm.resolve import DEFAULT_LM
from ..lm.scheduler import LMCancelled, LMDeadline, LMScheduler, Ticket, bound
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
    RecommendationReason,
    RecommendationsDone,
    RecommendationsRequest,
    RecommendationsResponse,
    Usage,
    _id,
)

log = logging.getLogger(__name__)
#: Admit a request only if the queue ahead of it is expected to take at most this share of ``timeout``.
QUEUE_TIME_SHARE = 0.8
#: Threads of the fast lane: retrieval and the fused ranker take milliseconds; two keep one slow call (a
#: first query embedding) from holding up the others without oversubscribing a small CPU.
FAST_WORKERS = 2
#: Threads of the chat lane: a chat turn's ranking reads the request and runs the request stage (~110 ms p50
#: under 8 mixed clients against ~20 ms for a plain ranking, eval/results/serving/NOTES.md); in a lane of its
#: own, plain rankings never queue behind it (they did: 147 ms p95 queued in the shared fast lane).
CHAT_WORKERS = 1
#: How many of a lane's last calls /healthz summarises (time queued, time running).
RECENT_CALLS = 1000


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


class Lane:
    """A thread pool with its own admission: at most ``max_concurrency`` requests in flight (running +
    queued); one whose queue would outlast the timeout is refused. ``queue_seconds(in_flight)``: the expected
    wait of one more call (None: not known yet, then the lane's recent time per call × calls ahead / workers)."""

    def __init__(self, name: str, workers: int, settings: ServerSettings, counters: dict,
                 queue_seconds: Callable[[int], float | None] = lambda _in_flight: None,
                 on_done: Callable[[Future], None] | None = None):
        self.name, self.workers, self.settings, self.counters = name, workers, settings, counters
        self.queue_seconds = queue_seconds
        self.on_done = on_done
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"recgen-{name}")
        self._admit_lock = threading.Lock()
        self.in_flight = 0
        self.call_seconds: float | None = None  # time per call, for admission (see _record_call)
        #: (call, seconds queued, seconds running) of the last calls: where a slow answer's time went (/healthz)
        self.recent: deque[tuple[str, float, float]] = deque(maxlen=RECENT_CALLS)

    def submit(self, fn: Callable, *args, ticket: Ticket | None = None, **kwargs) -> asyncio.Future:
        """Admit a call (or raise 429) and queue it; the call runs under ``ticket`` (its LM calls carry the
        request's deadline). The returned future is the call's result; it never times out by itself."""
        with self._admit_lock:
            self._refuse_if_full()
            self.in_flight += 1

        submitted = time.perf_counter()

        def job():
            start = time.perf_counter()
            try:
                if ticket is None:
                    return fn(*args, **kwargs)
                with bound(ticket):
                    return fn(*args, **kwargs)
            finally:
                self._record_call(time.perf_counter() - start)
                self.recent.append((call_name(fn), start - submitted, time.perf_counter() - start))

        try:
            future = self._executor.submit(job)
        except RuntimeError:  # executor shut down
            self._release(None)
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        future.add_done_callback(self._release)
        if self.on_done is not None:
            future.add_done_callback(self.on_done)
        wrapped = asyncio.wrap_future(future)
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception never retrieved"
        return wrapped

    def check(self) -> None:
        """Raise the 429 :meth:`submit` would raise now: a request that will need this lane is refused before
        any of its work starts (a stream that has begun cannot change its status)."""
        with self._admit_lock:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if self.in_flight >= self.settings.max_concurrency:
            self.counters["rejected_busy"] += 1
            raise APIError(429, f"the server is busy: {self.in_flight} requests are running or queued in the "
                                f"{self.name} lane (--max-concurrency {self.settings.max_concurrency}); retry "
                                "shortly", type="rate_limit_error", code="server_busy", headers={"Retry-After": "1"})
        expected = self.queue_seconds(self.in_flight)
        if expected is None:
            expected = (self.in_flight + 1) * (self.call_seconds or 0.0) / self.workers
        if self.in_flight and expected > QUEUE_TIME_SHARE * self.settings.timeout:
            self.counters["rejected_queue_too_long"] += 1
            raise APIError(429, f"the server is busy: {self.in_flight} requests are queued in the {self.name} "
                                f"lane, about {expected:.0f} s of work, more than the {self.settings.timeout:g} s "
                                "timeout; retry shortly", type="rate_limit_error", code="server_busy",
                           headers={"Retry-After": str(max(1, math.ceil(expected - QUEUE_TIME_SHARE * self.settings.timeout)))})

    def _record_call(self, took: float) -> None:
        """Time per call for admission: up at once to a slower call, down slowly (calls differ: chat with
        reasons is slower than a bare ranking, so an average alone let a mixed queue outlast the timeout)."""
        if self.call_seconds is None or took > self.call_seconds:
            self.call_seconds = took
        else:
            self.call_seconds = 0.9 * self.call_seconds + 0.1 * took

    def _release(self, _future: Future | None) -> None:
        with self._admit_lock:
            self.in_flight -= 1

    def start(self) -> None:
        if self._executor._shutdown:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"recgen-{self.name}")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict:
        out = {"in_flight": self.in_flight, "call_seconds": None if self.call_seconds is None
               else round(self.call_seconds, 3)}
        recent = list(self.recent)
        if recent:
            out["recent_calls"] = {"all": _timings([r[1:] for r in recent]), "by_call": {
                name: _timings([r[1:] for r in recent if r[0] == name]) for name in sorted({r[0] for r in recent})}}
        return out


def call_name(fn: Callable) -> str:
    """What a lane call is, for its timings: the function's name (through ``functools.partial``)."""
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None) or "call"


def _timings(calls: list[tuple[float, float]]) -> dict:
    """p50 / p95 of calls' (seconds queued, seconds running), in ms."""
    waited, ran = np.array(calls).T
    return {"calls": len(calls), **{f"{name}_ms": {"p50": round(float(np.percentile(v, 50)) * 1e3, 2),
                                                   "p95": round(float(np.percentile(v, 95)) * 1e3, 2)}
                                    for name, v in (("queued", waited), ("running", ran))}}


class RecgenServing:
    """Holds the recommender, the dataset (for ``user`` ids), the settings and the lanes (fast, chat, LM)."""

    def __init__(self, recommender, dataset=None, settings: ServerSettings | None = None):
        self.recommender = recommender
        self.dataset = dataset
        self.settings = settings or ServerSettings()
        self.context = ChatContext.from_catalog(recommender.catalog)
        self.counters = {"served": 0, "rejected_busy": 0, "rejected_queue_too_long": 0, "timed_out": 0, "failed": 0,
                         "reasons_missing": 0, "cancelled": 0}
        self.fast = Lane("fast", FAST_WORKERS, self.settings, self.counters)
        self.chat_lane = Lane("chat", CHAT_WORKERS, self.settings, self.counters)
        self.lm = Lane("lm", self.settings.max_concurrency, self.settings, self.counters, self._lm_queue_seconds,
                       on_done=self._lm_done)
        self._lm_ready = False
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

    def check_adapter(self, adapter: str | None) -> None:
        """A named adapter this server does not serve is a 404 (``model_not_found``), checked before anything
        else of the request, so the server and a batch line (``Served.check_adapter``) refuse the same bodies."""
        refusal = unserved_adapter(adapter, self.recommender.config.lm.adapters)
        if refusal:
            raise APIError(404, refusal, type="not_found_error", code="model_not_found", param="adapter")

    def _scheduler(self) -> LMScheduler | None:
        """The LM scheduler once an LM-lane call has finished (so asking for the backend never loads it, nor
        races the lane's first load); None before, or when the backend is not scheduled (a test's bare one)."""
        if not self._lm_ready:
            return None
        backend = self.recommender.backend
        return backend if isinstance(backend, LMScheduler) else None

    def _lm_done(self, _future) -> None:
        self._lm_ready = True

    def _lm_queue_seconds(self, in_flight: int) -> float | None:
        """The LM lane's wait for one more request: the scheduler's prompts ahead (running, queued, and this
        request's) at its recent time per prompt; the lane's requests share batches, so their times are not
        added one after another. None until the scheduler has timed a batch."""
        scheduler = self._scheduler()
        return None if scheduler is None else scheduler.expected_seconds(1)

    def health(self) -> dict:
        scheduler = self._scheduler()
        batching = None if scheduler is None else {"batches": scheduler.batches, "calls": scheduler.merged,
                                                   "queued_prompts": scheduler.queued_prompts(),
                                                   "seconds_per_prompt": scheduler.seconds_per_prompt}
        return {"status": "ok", "model": self.settings.served_model_name, "lm": self.lm_name,
                "adapter": self.recommender.config.lm.adapter, "items": len(self.recommender.catalog),
                "dataset": getattr(self.dataset, "name", None), "in_flight": self.fast.in_flight + self.chat_lane.in_flight + self.lm.in_flight,
                "max_concurrency": self.settings.max_concurrency, "uptime_s": round(time.time() - self.started, 1),
                "lanes": {"fast": self.fast.health(), "chat": self.chat_lane.health(), "lm": self.lm.health()},
                "lm_batching": batching,
                **self.counters}

    # -- lanes -----------------------------------------------------------------------------------------
    def submit(self, fn: Callable, *args, **kwargs) -> asyncio.Task:
        """Work that needs no LM, in the fast lane; the task raises 504 after ``timeout``."""
        return self._timed(self.fast.submit(fn, *args, **kwargs), None)

    def submit_chat(self, fn: Callable, *args, **kwargs) -> asyncio.Task:
        """A chat turn's ranking (no LM), in the chat lane: beside the fast lane, not ahead of its calls."""
        return self._timed(self.chat_lane.submit(fn, *args, **kwargs), None)

    def submit_lm(self, fn: Callable, *args, **kwargs) -> asyncio.Task:
        """Work that needs the LM, in the LM lane under a ticket with the request's deadline; 504 after
        ``timeout`` (the ticket is cancelled then, so its queued prompts leave the batch)."""
        ticket = Ticket(deadline=time.monotonic() + self.settings.timeout)
        return self._timed(self.lm.submit(fn, *args, ticket=ticket, **kwargs), ticket)

    def _timed(self, future: asyncio.Future, ticket: Ticket | None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._await(future, ticket))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def cancel(self, ticket: Ticket) -> None:
        """The request's LM work is no longer wanted: its queued prompts leave the scheduler's queue."""
        scheduler = self._scheduler()
        if scheduler is not None:
            scheduler.cancel(ticket)
        else:
            ticket.cancelled.set()

    async def _await(self, future: asyncio.Future, ticket: Ticket | None):
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.settings.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()  # frees the slot at once if it had not started
            if ticket is not None:
                self.cancel(ticket)
            self.counters["timed_out"] += 1
            raise APIError(504, f"the request took longer than {self.settings.timeout:g} s (--timeout); the server "
                                "may be overloaded", type="timeout_error", code="timeout") from None
        except asyncio.CancelledError:  # the client went away
            future.cancel()
            if ticket is not None:
                self.cancel(ticket)
            self.counters["cancelled"] += 1
            raise
        except (LMCancelled, LMDeadline) as exc:
            self.counters["timed_out"] += 1
            raise APIError(504, f"the request's LM work did not run before its deadline ({exc})",
                           type="timeout_error", code="timeout") from None

    def start(self) -> None:
        """Fresh lanes if an earlier lifespan shut them down (the same app may be started again, as test
        clients and schema fuzzers do), so no request gets 503 from a previous shutdown."""
        self.fast.start()
        self.chat_lane.start()
        self.lm.start()

    def shutdown(self) -> None:
        self.fast.shutdown()
        self.chat_lane.shutdown()
        self.lm.shutdown()

    # -- structured recommendations --------------------------------------------------------------------
    def history_for(self, user: str) -> list[str]:
        if self.dataset is None:
            raise InvalidRequestError("this server was started without a dataset, so `user` ids cannot be "
                                      "resolved; send `history` (item ids) instead")
        return list(self.dataset.history(user))

    def recommend_request(self, request: RecommendationsRequest) -> RecommendRequest:
        """The recommender's request: ``user`` resolved to a history (and their rejected items excluded), a named
        adapter's model name selecting it."""
        history, exclude = list(request.history or []), list(request.exclude or [])
        adapter = request.adapter
        if request.model is not None:
            self.check_model(request.model)
            if adapter is None and request.model in self.recommender.config.lm.adapters:
                adapter = request.model  # as on the chat route: a named adapter's model name selects it
        self.check_adapter(adapter)  # before the user: an unknown adapter is refused whoever asks, as in batch
        if request.user is not None:
            history = self.history_for(request.user) + history
            exclude += self.recommender.rejected(request.user)  # the feedback loop's rejected items
        return RecommendRequest(**{**request.model_dump(exclude={"user", "model", "stream"}), "history": history,
                                   "exclude": exclude or None, "adapter": adapter})

    def start_recommendations(self, inner: RecommendRequest) -> tuple[asyncio.Task, bool]:
        """Admit and queue the ranking (429 raised here, before any response starts): a task for the items, and
        whether their reasons are still to be written in the LM lane (:meth:`with_reasons`)."""
        if self._ranks_without_lm(inner):
            popular = not inner.history and not (inner.query or "").strip()  # fixed reasons, no LM
            asked = bool(inner.reasons) and not popular
            ranked = inner.model_copy(update={"reasons": inner.reasons and not asked})
            if asked:
                self.lm.check()  # its reasons could not be written in time: 429 now, before any work

            def recommendation_ranking():
                return self.recommender.recommend_batch([ranked])[0]

            return self.submit(recommendation_ranking), asked
        return self.submit_lm(lambda: self.recommender.recommend_batch([inner])[0]), False  # the LM ranks

    async def recommendations(self, request: RecommendationsRequest, http_request=None) -> RecommendationsResponse:
        """``http_request`` (Starlette's): watched for a client that goes away while reasons are written."""
        start = time.perf_counter()
        inner = self.recommend_request(request)
        task, pending = self.start_recommendations(inner)
        recs, missing = await task, False
        unused = list(getattr(recs, "unused_words", ()))  # the ranked list carries them; the reasoned copy does not
        if pending and recs:
            recs, missing = await self.with_reasons(inner, recs, start, http_request)
        self.counters["served"] += 1
        return self._response(request, recs, start, missing, unused)

    def _response(self, request: RecommendationsRequest, recs: list, start: float, missing: bool = False,
                  unused: list[str] | None = None) -> RecommendationsResponse:
        """``unused``: the request's unused words (default: those ``recs``, a ``Recommendations``, carries)."""
        unused = list(getattr(recs, "unused_words", ())) if unused is None else unused
        return RecommendationsResponse(model=self.settings.served_model_name, user=request.user, query=request.query,
                                       mode=request.mode, seconds=round(time.perf_counter() - start, 3),
                                       recommendations=recs, reasons_missing=missing, unused_words=unused)

    async def recommendations_stream(self, request: RecommendationsRequest, inner: RecommendRequest,
                                     task: asyncio.Task, pending: bool, start: float,
                                     http_request=None) -> AsyncIterator[str]:
        """Server-sent events: the ranked items as soon as the order exists (a ``recommendations`` object,
        reasons empty), then one ``recommendation.reason`` per item once the LM has written them, then
        ``recommendations.done`` (with ``reasons_missing``) and ``data: [DONE]``. Errors become an ``error``
        event; a client that goes away cancels the request's queued LM work."""
        try:
            recs = await task
            yield _sse(self._response(request, recs, start))
            missing = False
            if pending and recs:
                recs, missing = await self.with_reasons(inner, recs, start, http_request)
                if not missing:
                    for rec in recs:
                        yield _sse(RecommendationReason(rank=rec.rank, item_id=rec.item_id, reason=rec.reason,
                                                        reason_source=rec.reason_source))
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the stream has started; report instead of dropping it
            yield self._error_event(exc)
            return
        self.counters["served"] += 1
        yield _sse(RecommendationsDone(reasons_missing=missing, seconds=round(time.perf_counter() - start, 3)))
        yield "data: [DONE]\n\n"

    def _error_event(self, exc: Exception) -> str:
        from ..errors import RecgenError

        if not isinstance(exc, (APIError, RecgenError)):
            log.error("stream failed", exc_info=exc)
            self.counters["failed"] += 1
        return f"data: {json.dumps(error_body(exc))}\n\n"

    def _ranks_without_lm(self, request: RecommendRequest) -> bool:
        """Score mode with the fused second stage orders without the LM (fused ranker, request stage,
        retrieval order or popularity); generate mode and ``second_stage = "lm"`` need it."""
        return request.mode == "score" and self.recommender.config.ranking.second_stage == "fusion"

    async def with_reasons(self, request: RecommendRequest, recs: list, start: float,
                           http_request=None) -> tuple[list, bool]:
        """``recs`` with the LM's checked reasons, or unchanged and ``missing = True`` when the request's
        deadline passes first."""
        reasons = await self.lm_or_none(start, http_request, self.recommender.explain, list(request.history or []),
                                        request.query, [r.item_id for r in recs], adapter=request.adapter)
        if reasons is None:
            return recs, True
        return [r.model_copy(update={"reason": text, "reason_source": source})
                for r, (text, source) in zip(recs, reasons)], False

    async def lm_or_none(self, start: float, http_request, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` in the LM lane under a ticket whose deadline is ``timeout`` after ``start``;
        None (counted as ``reasons_missing``) when the deadline passes first, or when the lane filled up since the
        request's :meth:`Lane.check` (its items are served, not refused after the work). A client that goes away
        (``http_request`` disconnects, or this task is cancelled) cancels the ticket: its queued prompts leave
        the batch."""
        ticket = Ticket(deadline=time.monotonic() + self.settings.timeout - (time.perf_counter() - start))
        try:
            future = self.lm.submit(fn, *args, ticket=ticket, **kwargs)
        except APIError as exc:
            if exc.status != 429:
                raise
            self.counters["reasons_missing"] += 1  # the lane filled up since the request's check: items only
            return None
        watcher = (asyncio.get_running_loop().create_task(_client_gone(http_request, future))
                   if http_request is not None else None)
        try:
            remaining = max(0.0, self.settings.timeout - (time.perf_counter() - start))
            return await asyncio.wait_for(asyncio.shield(future), remaining)
        except (asyncio.TimeoutError, TimeoutError, LMDeadline, LMCancelled):
            future.cancel()
            self.cancel(ticket)
            self.counters["reasons_missing"] += 1
            return None
        except asyncio.CancelledError:
            future.cancel()
            self.cancel(ticket)
            self.counters["cancelled"] += 1
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

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

    def start_chat(self, request: ChatCompletionRequest) -> tuple[asyncio.Task, bool]:
        """Validate and queue one chat turn's ranking (4xx and 429 raised here, before anything is streamed): a
        task for the :class:`ChatReply`, and whether its reasons are still to be written in the LM lane
        (:meth:`chat_with_reasons`). Score mode with the fused ranker ranks in the fast lane."""
        messages, history, notes, who = self._validate_chat(request)
        options = request.recgen or RecgenChatOptions()
        adapter = request.model if request.model in self.recommender.config.lm.adapters else None  # OpenAI `model`
        turn = partial(chat_turn, self.recommender, self.context, messages, history=history, k=options.k,
                       mode=options.mode, who=who, extra_notes=notes, adapter=adapter)
        if not self._ranks_without_lm(RecommendRequest(mode=options.mode)):
            return self.submit_lm(turn, reasons=options.reasons), False
        if options.reasons:
            self.lm.check()  # its reasons could not be written in time: 429 now, before any work

        def chat_ranking() -> ChatReply:
            reply = turn(reasons=False)
            if options.reasons and reply.popular and reply.recommendations:
                reply = turn(reasons=True)  # the popularity list's reasons are fixed: no LM
            return reply

        return self.submit_chat(chat_ranking), options.reasons

    async def chat_with_reasons(self, request: ChatCompletionRequest, reply: ChatReply, start: float,
                                http_request=None) -> tuple[ChatReply, bool]:
        """``reply`` with its reasons from the LM lane, or unchanged and ``missing = True`` past the deadline."""
        if reply.popular or not reply.recommendations:
            return reply, False
        adapter = request.model if request.model in self.recommender.config.lm.adapters else None
        written = await self.lm_or_none(start, http_request, chat_reasons, self.recommender, self.context, reply,
                                        adapter=adapter)
        return (reply, True) if written is None else (written, False)

    def _extras(self, reply: ChatReply, missing: bool = False) -> dict[str, Any]:
        return {**reply.state.as_dict(), "notes": reply.notes, "query": reply.query, "reasons_missing": missing}

    async def chat(self, request: ChatCompletionRequest, http_request=None) -> ChatCompletionResponse:
        start = time.perf_counter()
        task, pending = self.start_chat(request)
        reply: ChatReply = await task
        missing = False
        if pending:
            reply, missing = await self.chat_with_reasons(request, reply, start, http_request)
        self.counters["served"] += 1
        return ChatCompletionResponse(
            model=request.model, choices=[ChatChoice(message=ChatResponseMessage(content=reply.text))],
            usage=Usage(), recommendations=reply.recommendations, recgen=self._extras(reply, missing),
            unused_words=list(reply.unused_words),
        )

    async def chat_stream(self, request: ChatCompletionRequest, task: asyncio.Task, pending: bool, start: float,
                          http_request=None) -> AsyncIterator[str]:
        """Server-sent events in OpenAI's ``chat.completion.chunk`` shape. The ranked items come first, as soon
        as the order exists, on a chunk of their own (``recommendations``, reasons empty; no content yet); when
        the reasons are written, the reply text follows one line per chunk (the same text as without
        streaming), the items with their reasons on the last chunk, then ``data: [DONE]``. Errors become an
        ``error`` event; a client that goes away cancels the turn's queued LM work."""
        chunk_id, created = _id("chatcmpl"), int(time.time())

        def event(choices: list[ChunkChoice], **extra) -> str:
            chunk = ChatCompletionChunk(id=chunk_id, created=created, model=request.model, choices=choices, **extra)
            return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

        yield event([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        try:
            reply: ChatReply = await task
            missing = False
            if pending and not reply.popular and reply.recommendations:
                yield event([ChunkChoice(delta=DeltaMessage())], recommendations=reply.recommendations,
                            recgen=self._extras(reply))
                reply, missing = await self.chat_with_reasons(request, reply, start, http_request)
        except asyncio.CancelledError:  # the client went away: its queued LM work leaves the batch
            task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the stream has started; report instead of dropping it
            yield self._error_event(exc)
            return
        self.counters["served"] += 1
        lines = reply.text.split("\n")
        for number, line in enumerate(lines):
            text = line + ("\n" if number < len(lines) - 1 else "")
            yield event([ChunkChoice(delta=DeltaMessage(content=text))])
        yield event([ChunkChoice(delta=DeltaMessage(), finish_reason="stop")],
                    recommendations=reply.recommendations, recgen=self._extras(reply, missing),
                    unused_words=list(reply.unused_words))
        if (request.stream_options or {}).get("include_usage"):
            yield event([], usage=Usage())
        yield "data: [DONE]\n\n"


def _sse(message) -> str:
    """One server-sent event carrying a pydantic message as JSON."""
    return f"data: {message.model_dump_json()}\n\n"


async def _client_gone(http_request, future: asyncio.Future, every: float = 0.25) -> None:
    """Cancel ``future`` once the HTTP client disconnects (polled: Starlette tells only when asked)."""
    while not future.done():
        if await http_request.is_disconnected():
            future.cancel()
            return
        await asyncio.sleep(every)


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
