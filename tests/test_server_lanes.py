"""LM scheduler (issue 25): concurrent callers' prompts merged into one backend call give the same greedy
text as each call alone; a cancelled or expired request's queued prompts leave the queue."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from recgen.lm.prompt import ChatPrompt
from recgen.lm.scheduler import LMCancelled, LMDeadline, LMScheduler, Ticket, bound


def _prompts(user: int) -> list[ChatPrompt]:
    """One user's reason prompts: a long part of their own (the history), then the item."""
    history = ", ".join(f"film {user * 7 + n}" for n in range(12))
    return [ChatPrompt(messages=[{"role": "system", "content": "Say why in one sentence."},
                                 {"role": "user", "content": f"User {user} liked {history}. Why film {n}?"}])
            for n in range(3)]


def test_merged_users_keep_their_own_shared_prefix(tiny_backend):
    """Four users' merged reasons are prefilled as four prefixes (one per user), not one short common one."""
    from recgen.lm.transformers_backend import shared_prefix_runs

    rows = [tiny_backend.encode(p) for u in range(4) for p in _prompts(u)]
    groups = shared_prefix_runs(rows)
    assert [(start, end) for start, end, _ in groups] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    common = min(len(os.path.commonprefix([rows[0], r])) for r in rows)
    assert all(shared > common + 20 for _, _, shared in groups)  # each user's history is shared, once
    assert shared_prefix_runs([[1, 2, 3]]) == [(0, 1, 2)] and shared_prefix_runs([[5], [5]]) == [(0, 1, 0), (1, 2, 0)]


def test_merged_calls_write_what_each_call_writes_alone(tiny_backend):
    alone = [tiny_backend.generate_text(_prompts(u), 6) for u in range(4)]
    scheduler = LMScheduler(tiny_backend, max_prompts=64, max_wait=0.2)  # waits, so the four calls merge
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda u: scheduler.generate_text(_prompts(u), 6), range(4)))
    assert together == alone
    assert scheduler.batches < 4 and scheduler.merged == 4  # at least two calls shared a backend call
    scheduler.close()


class _Gate:
    """A backend whose first call blocks until released: lets a test hold the scheduler busy."""

    name = "gate"

    def __init__(self):
        self.release, self.seen = threading.Event(), []

    def generate_text(self, prompts, max_new_tokens):
        self.release.wait(10)
        self.seen.append(len(prompts))
        return ["x"] * len(prompts)


def test_cancelled_and_expired_requests_leave_the_queue():
    gate = _Gate()
    scheduler = LMScheduler(gate)
    busy = threading.Thread(target=scheduler.generate_text, args=(_prompts(0), 4))
    busy.start()
    time.sleep(0.2)  # the first call now runs and blocks
    cancelled, expired = Ticket(), Ticket(deadline=time.monotonic() + 0.3)
    errors: dict = {}

    def call(name, ticket):
        try:
            with bound(ticket):
                scheduler.generate_text(_prompts(1), 4)
        except (LMCancelled, LMDeadline) as exc:
            errors[name] = exc

    threads = [threading.Thread(target=call, args=(n, t)) for n, t in (("cancelled", cancelled), ("expired", expired))]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert scheduler.queued_prompts() == 6
    assert scheduler.cancel(cancelled) == 3
    time.sleep(0.5)  # past the second ticket's deadline: its caller gave up while queued
    gate.release.set()
    for t in [busy, *threads]:
        t.join(5)
    assert isinstance(errors["cancelled"], LMCancelled) and isinstance(errors["expired"], LMDeadline)
    assert gate.seen == [3]  # only the first call ever reached the backend
    scheduler.close()


@pytest.mark.parametrize("size", [0])
def test_an_empty_call_never_reaches_the_backend(size):
    assert LMScheduler(_Gate()).generate_text([], 4) == []


class _HeldReasons:
    """A real recommender whose reasons wait until released: holds the LM lane busy."""

    def __init__(self, inner):
        self.inner, self.release = inner, threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def explain(self, *args, **kwargs):
        self.release.wait(10)
        return self.inner.explain(*args, **kwargs)


def test_no_reasons_never_waits_for_reasons_and_a_late_request_keeps_its_items(tiny_recommender, dataset):
    from fastapi.testclient import TestClient

    from recgen.server.app import create_app
    from recgen.server.serving import ServerSettings

    held = _HeldReasons(tiny_recommender)
    with TestClient(create_app(held, dataset, ServerSettings(timeout=3.0))) as c:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(c.post, "/v1/recommendations", json={"query": "drama", "k": 3, "reasons": True})
            time.sleep(0.3)
            fast = c.post("/v1/recommendations", json={"query": "drama", "k": 3, "reasons": False})
            assert fast.status_code == 200 and not slow.done()  # answered while the reasons request waits
            late = slow.result(10)
        held.release.set()
    assert late.status_code == 200 and late.json()["reasons_missing"] is True  # past the deadline: items, no reasons
    assert [r["item_id"] for r in late.json()["recommendations"]] == [r["item_id"] for r in fast.json()["recommendations"]]
    assert all(r["reason"] is None for r in late.json()["recommendations"])


def test_a_full_lm_lane_refuses_reasons_before_the_stream_but_serves_items_without(tiny_recommender, dataset):
    """429 with Retry-After comes before any work when the reasons could not be written in time (not as an
    error event in a stream that began with 200); a request without reasons is still served."""
    from fastapi.testclient import TestClient

    from recgen.server.app import create_app
    from recgen.server.serving import ServerSettings

    held = _HeldReasons(tiny_recommender)
    with TestClient(create_app(held, dataset, ServerSettings(timeout=30.0, max_concurrency=1))) as c:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(c.post, "/v1/recommendations", json={"query": "drama", "k": 3, "reasons": True})
            deadline = time.time() + 10
            while c.get("/healthz").json()["lanes"]["lm"]["in_flight"] == 0 and time.time() < deadline:
                time.sleep(0.05)
            refused = c.post("/v1/recommendations", json={"query": "comedy", "k": 3, "reasons": True, "stream": True})
            chat = c.post("/v1/chat/completions", json={"model": "recgen", "messages": [
                {"role": "user", "content": "comedy"}], "stream": True})
            plain = c.post("/v1/recommendations", json={"query": "comedy", "k": 3, "reasons": False})
            held.release.set()
            assert busy.result(30).status_code == 200
    for response in (refused, chat):
        assert response.status_code == 429 and response.headers["Retry-After"]
        assert response.json()["error"]["code"] == "server_busy"
    assert plain.status_code == 200 and len(plain.json()["recommendations"]) == 3


def test_the_queue_estimate_counts_prompts_ahead_not_requests_one_after_another():
    """Admission's estimate (issue 25): requests share batches, so the wait is the prompts ahead at the recent
    time per prompt, not each request's time added up."""
    gate = _Gate()
    gate.release.set()
    scheduler = LMScheduler(gate)
    assert scheduler.expected_seconds() is None  # nothing timed yet
    scheduler.generate_text(_prompts(0), 4)
    per_prompt = scheduler.seconds_per_prompt
    assert per_prompt is not None and scheduler.prompts_per_call == 3
    assert scheduler.expected_seconds(2) == pytest.approx(6 * per_prompt)
    scheduler.close()


def test_lm_calls_run_at_a_lower_cpu_priority_than_their_callers(tiny_backend):
    """The scheduler's thread (every backend call) runs ``nice`` lower than the request threads that wait for
    it, so requests without the LM get a core first; the callers keep their own priority."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []

    class Recording:
        name = "recording"

        def generate_text(self, prompts, max_new_tokens):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return tiny_backend.generate_text(prompts, max_new_tokens)

    scheduler = LMScheduler(Recording(), nice=5)
    assert scheduler.generate_text(_prompts(0), 4) == tiny_backend.generate_text(_prompts(0), 4)
    assert seen == [min(19, base + 5)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    scheduler.close()


def test_an_engine_process_is_lowered_with_every_thread():
    import subprocess
    import sys

    import psutil

    from recgen.lm.cpu_priority import lower_processes

    child = subprocess.Popen([sys.executable, "-c", "import threading, time; threading.Thread(target=time.sleep, "
                              "args=(30,)).start(); time.sleep(30)"])
    try:
        time.sleep(0.5)
        base = psutil.Process(child.pid).nice()
        assert lower_processes([child.pid, 2**22 + 7], 3) == {child.pid: min(19, base + 3)}  # a gone pid: skipped
        threads = psutil.Process(child.pid).threads()
        assert len(threads) >= 2 and {os.getpriority(os.PRIO_PROCESS, t.id) for t in threads} == {min(19, base + 3)}
    finally:
        child.kill()
        child.wait()
