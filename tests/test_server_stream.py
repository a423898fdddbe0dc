"""Streaming (issue 25 item 4) against a real uvicorn server on loopback: the ranked items arrive before the
reasons are written (the reasons are held back here, so a stream that waited for them would fail), the
reasons follow, the chat stream's text is the non-streamed reply's, and a client that goes away mid-stream
cancels its queued LM work (its prompts never reach the model)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from recgen.lm.scheduler import LMScheduler
from recgen.server.app import create_app
from recgen.server.serving import ServerSettings

pytestmark = pytest.mark.slow


class _Counting:
    """The tiny backend, counting the prompts that reach it."""

    name = "counting"

    def __init__(self, backend):
        self.backend, self.prompts = backend, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate_text(self, prompts, max_new_tokens):
        self.prompts += len(prompts)
        return self.backend.generate_text(prompts, max_new_tokens)


class _Held:
    """A real recommender (its backend behind the real scheduler) whose reasons start only once released."""

    def __init__(self, inner, backend):
        self.inner, self.release, self.backend = inner, threading.Event(), backend

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def explain(self, *args, **kwargs):
        self.release.wait(30)
        return self.inner.pipeline.reasoner.explain(*args, **kwargs)


@pytest.fixture(scope="module")
def held(tiny_recommender, tiny_backend):
    counting = _Counting(tiny_backend)
    scheduler = LMScheduler(counting)
    reasoner = tiny_recommender.pipeline.reasoner
    original = reasoner.backend
    reasoner.backend = scheduler
    yield _Held(tiny_recommender, scheduler), counting
    reasoner.backend = original


@pytest.fixture(scope="module")
def live(held, dataset):
    uvicorn = pytest.importorskip("uvicorn")
    recommender, counting = held
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(recommender, dataset, ServerSettings(timeout=60))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield url, recommender, counting
    recommender.release.set()
    server.should_exit = True
    thread.join(10)


def _events(lines):
    for line in lines:
        if line.startswith("data: "):
            yield line[6:] if line == "data: [DONE]" else json.loads(line[6:])


def test_recommendations_stream_items_first_then_reasons(live):
    url, recommender, _ = live
    recommender.release.clear()
    body = {"query": "a funny space adventure", "k": 4, "reasons": True}
    with httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/v1/recommendations", json={**body, "stream": True}) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = _events(response.iter_lines())
            first = next(events)  # arrives while the reasons are still held back
            assert first["object"] == "recommendations" and len(first["recommendations"]) == 4
            assert all(r["reason"] is None for r in first["recommendations"])
            recommender.release.set()
            rest = list(events)
        plain = http.post("/v1/recommendations", json=body).json()
    reasons = [e for e in rest if isinstance(e, dict) and e["object"] == "recommendation.reason"]
    assert [(e["rank"], e["item_id"]) for e in reasons] == [(r["rank"], r["item_id"]) for r in first["recommendations"]]
    assert [e["reason"] for e in reasons] == [r["reason"] for r in plain["recommendations"]]  # as without streaming
    assert all(e["reason"] for e in reasons)
    assert rest[-2]["object"] == "recommendations.done" and rest[-2]["reasons_missing"] is False
    assert rest[-1] == "[DONE]"


def test_chat_stream_sends_items_before_the_text_and_the_same_text(live):
    url, recommender, _ = live
    recommender.release.clear()
    body = {"model": "recgen", "messages": [{"role": "user", "content": "a funny sci-fi film, not horror"}],
            "recgen": {"k": 3}}
    with httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            events = _events(response.iter_lines())
            assert next(events)["choices"][0]["delta"]["role"] == "assistant"
            items = next(events)  # the ranked items, reasons held back
            assert len(items["recommendations"]) == 3 and all(r.get("reason") is None for r in items["recommendations"])
            recommender.release.set()
            rest = [e for e in events if e != "[DONE]"]
        plain = http.post("/v1/chat/completions", json=body).json()
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in rest if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert rest[-1]["recommendations"] == plain["recommendations"] and all(r["reason"] for r in plain["recommendations"])
    assert rest[-1]["recgen"]["reasons_missing"] is False


def test_a_client_gone_mid_stream_frees_its_share_of_the_batch(live):
    url, recommender, counting = live
    recommender.release.clear()
    health = lambda: httpx.get(url + "/healthz", timeout=10).json()  # noqa: E731
    cancelled, sent = health()["cancelled"], counting.prompts
    with httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/v1/recommendations",
                         json={"query": "space adventure", "k": 4, "reasons": True, "stream": True}) as response:
            first = next(_events(response.iter_lines()))
            assert first["object"] == "recommendations"
    # the client has gone; the server notices, cancels the request's ticket, and its prompts never run
    deadline = time.time() + 10
    while health()["cancelled"] == cancelled and time.time() < deadline:
        time.sleep(0.1)
    assert health()["cancelled"] == cancelled + 1
    recommender.release.set()
    deadline = time.time() + 30
    while health()["lanes"]["lm"]["in_flight"] and time.time() < deadline:
        time.sleep(0.1)
    assert health()["lanes"]["lm"]["in_flight"] == 0
    assert counting.prompts == sent  # the reasons of the request that went away never reached the model
