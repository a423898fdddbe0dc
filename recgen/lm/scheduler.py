"""Cross-request batching: one thread owns the LM backend, and the calls of concurrent requests that arrive
while it works are merged into its next backend call.

The backends are batched already (a list of prompts per call), but a server used to call them once per
request on one worker, so eight users' reasons ran one after another. :class:`LMScheduler` is itself an
:class:`~recgen.lm.backend.LMBackend`: every caller (a request's thread) blocks on its own share while the
scheduler thread runs merged calls. Batches form by themselves under load ("continuous" batching at the
granularity of backend calls): while one call runs, new ones queue; the next call takes every queued call of
the same kind, up to ``max_prompts`` prompts, after waiting at most ``max_wait`` seconds for company. An idle
scheduler with ``max_wait = 0`` adds no latency, so single-user paths (CLI, batch jobs) lose nothing.

Per-request deadlines and cancellation: a caller may run under a :class:`Ticket` (``with bound(ticket):``,
a context variable, so the reasoner and the ranker keep their signatures). A ticket's calls that are still
queued when it is cancelled (the client went away, or the server gave up waiting) or when its deadline passes
leave the queue and raise :class:`LMCancelled` / :class:`LMDeadline` in the caller; a call already running
finishes (a transformers forward pass cannot drop rows midway). Results do not depend on the company a call
keeps: the backends decode greedily, row by row (tests/test_server_lanes.py checks batched = alone).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from .cpu_priority import lower_this_thread
from .prompt import ChatPrompt

#: The methods whose calls are merged: all take parallel per-prompt lists (and, for text, one token budget).
_MERGED = ("score_labels", "generate_labels", "generate_text")


class LMCancelled(Exception):
    """The request that made this LM call was cancelled (its client went away) before the call ran."""


class LMDeadline(Exception):
    """The request's deadline passed before its LM call ran."""


@dataclass
class Ticket:
    """One request's claim on the LM: its deadline (``time.monotonic()`` seconds, None = none) and whether it
    was cancelled. Thread-safe; :meth:`LMScheduler.cancel` also drops its queued calls at once."""

    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("recgen_lm_ticket", default=None)


@contextlib.contextmanager
def bound(ticket: Ticket):
    """Run the block's LM calls under ``ticket`` (in this thread / context only)."""
    token = _TICKET.set(ticket)
    try:
        yield ticket
    finally:
        _TICKET.reset(token)


@dataclass
class _Call:
    method: str
    key: tuple               # calls with equal keys can be merged (method, token budget)
    lists: tuple[list, ...]  # parallel per-prompt lists: prompts first
    ticket: Ticket | None
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.lists[0])


class LMScheduler:
    """An :class:`~recgen.lm.backend.LMBackend` in front of ``backend`` that merges concurrent calls.

    ``max_prompts``: most prompts in one merged call (a call larger than that still runs whole, alone).
    ``max_wait``: seconds the scheduler waits for more calls before starting a batch smaller than that."""

    def __init__(self, backend, max_prompts: int = 64, max_wait: float = 0.0, nice: int = 0):
        self.backend = backend
        self.max_prompts = max_prompts
        self.max_wait = max_wait
        self.nice = nice  # how much lower the scheduler thread (the backend's calls) runs (:mod:`.cpu_priority`)
        self._queue: list[_Call] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0   # backend calls made, and the request calls they served (for /healthz and benchmarks)
        self.merged = 0
        self.seconds_per_prompt: float | None = None  # recent backend time per prompt, and prompts per request
        self.prompts_per_call: float | None = None     # call: what a server's admission estimates a queue with
        self._running = 0

    @property
    def name(self) -> str:
        return self.backend.name

    def __getattr__(self, name):
        """Everything else (tokenizer, adapters, allowed_tokens, lora_request …) is the backend's."""
        if name == "backend":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.backend, name)

    # -- the LMBackend protocol --------------------------------------------------------------------------
    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        return self._call("score_labels", ("score_labels",), (list(prompts), list(labels)))

    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        return self._call("generate_labels", ("generate_labels",), (list(prompts), list(labels), list(k)))

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        return self._call("generate_text", ("generate_text", max_new_tokens), (list(prompts),))

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return self.backend.count_tokens(prompt)  # the tokenizer only; no model call

    def close(self) -> None:
        """Stop the scheduler thread (queued calls fail) and close the backend."""
        with self._cond:
            self._closed = True
            dropped, self._queue = self._queue, []
            self._cond.notify_all()
        for call in dropped:
            call.future.set_exception(LMCancelled("the language model is shutting down"))
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def cancel(self, ticket: Ticket) -> int:
        """Cancel ``ticket``: its queued calls leave the queue now (their callers get :class:`LMCancelled`);
        returns how many prompts left."""
        ticket.cancelled.set()
        with self._cond:
            gone = [c for c in self._queue if c.ticket is ticket]
            self._queue = [c for c in self._queue if c.ticket is not ticket]
        for call in gone:
            call.future.set_exception(LMCancelled("the request was cancelled"))
        return sum(c.size for c in gone)

    def queued_prompts(self) -> int:
        with self._cond:
            return sum(c.size for c in self._queue)

    def expected_seconds(self, calls: int = 1) -> float | None:
        """Seconds until ``calls`` more calls of the recent size would be done: every prompt running or queued
        ahead of them, and theirs, at the recent time per prompt (None before the first timed batch).
        Conservative: a bigger batch costs less per prompt than the recent ones."""
        if self.seconds_per_prompt is None or self.prompts_per_call is None:
            return None
        with self._cond:
            ahead = self._running + sum(c.size for c in self._queue)
        return (ahead + calls * self.prompts_per_call) * self.seconds_per_prompt

    # -- the scheduler thread ---------------------------------------------------------------------------
    def _call(self, method: str, key: tuple, lists: tuple[list, ...]):
        if not lists[0]:
            return []
        ticket = _TICKET.get()
        if ticket is not None and ticket.cancelled.is_set():
            raise LMCancelled("the request was cancelled")
        if ticket is not None and ticket.expired(time.monotonic()):
            raise LMDeadline("the request's deadline passed before its LM call")
        call = _Call(method, key, lists, ticket)
        with self._cond:
            if self._closed:
                raise LMCancelled("the language model is shutting down")
            self._queue.append(call)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="recgen-lm-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if ticket is not None and ticket.deadline is not None:
            # Wake at the deadline if the call is still queued; a running call is waited for (it cannot stop).
            try:
                return call.future.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
            except TimeoutError:
                with self._cond:
                    if call in self._queue:
                        self._queue.remove(call)
                        call.future.set_exception(LMDeadline("the request's deadline passed before its LM call"))
        return call.future.result()

    def _next_batch(self) -> list[_Call] | None:
        """The oldest queued call and every queued call that can join it (same key, within ``max_prompts``),
        after waiting up to ``max_wait`` for company; None once closed."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self.max_wait > 0:
                end = time.monotonic() + self.max_wait
                while not self._closed and self._room(self._queue[0].key) > 0 and time.monotonic() < end:
                    self._cond.wait(end - time.monotonic())
                if self._closed or not self._queue:
                    return None if self._closed else []
            first = self._queue[0]
            batch, total = [], 0
            for call in list(self._queue):
                if call.key == first.key and (not batch or total + call.size <= self.max_prompts):
                    batch.append(call)
                    total += call.size
                    self._queue.remove(call)
            return batch

    def _room(self, key: tuple) -> int:
        return self.max_prompts - sum(c.size for c in self._queue if c.key == key)

    def _run(self) -> None:
        lower_this_thread(self.nice)  # before the first backend call: torch's threads started here inherit it
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for call in batch:
                if call.future.done():
                    continue
                if call.ticket is not None and call.ticket.cancelled.is_set():
                    call.future.set_exception(LMCancelled("the request was cancelled"))
                elif call.ticket is not None and call.ticket.expired(now):
                    call.future.set_exception(LMDeadline("the request's deadline passed before its LM call"))
                else:
                    live.append(call)
            if live:
                self._execute(live)

    def _timed(self, per_prompt: float, per_call: float) -> None:
        """Moving averages for :meth:`expected_seconds` (the recent batches weigh most)."""
        old = self.seconds_per_prompt
        self.seconds_per_prompt = per_prompt if old is None else 0.7 * old + 0.3 * per_prompt
        old = self.prompts_per_call
        self.prompts_per_call = per_call if old is None else 0.7 * old + 0.3 * per_call

    def _execute(self, calls: list[_Call]) -> None:
        method = calls[0].method
        merged = tuple([x for call in calls for x in call.lists[part]] for part in range(len(calls[0].lists)))
        args = (*merged, calls[0].key[1]) if method == "generate_text" else merged
        size = len(merged[0])
        self._running, start = size, time.perf_counter()
        try:
            results = getattr(self.backend, method)(*args)
        except BaseException as exc:  # noqa: BLE001 - every caller of the merged call gets the error
            self._running = 0
            if len(calls) == 1:
                calls[0].future.set_exception(exc)
            else:  # one caller's bad prompt must not fail the others: rerun each alone
                for call in calls:
                    self._execute([call])
            return
        self._running = 0
        self._timed((time.perf_counter() - start) / size, size / len(calls))
        self.batches += 1
        self.merged += len(calls)
        start = 0
        for call in calls:
            call.future.set_result(results[start:start + call.size])
            start += call.size
