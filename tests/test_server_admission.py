"""Admission by queue time (issue 12 robustness): under the real models a full queue (16 x ~5 s) outlasted
the 60 s timeout, so the last clients waited a minute for a 504. Now a request whose queue would outlast the
timeout gets a prompt 429 with Retry-After, and no admitted request times out."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from builders import SlowRecommender
from fastapi.testclient import TestClient

from recgen.server.app import create_app
from recgen.server.serving import ServerSettings


def test_a_queue_longer_than_the_timeout_is_refused_early(tiny_recommender, dataset):
    slow = SlowRecommender(tiny_recommender, delay=0.6)
    body = {"query": "drama", "k": 2, "reasons": False}
    with TestClient(create_app(slow, dataset, ServerSettings(max_concurrency=16, timeout=1.6))) as c:
        assert c.post("/v1/recommendations", json=body).status_code == 200  # learns ~0.6 s per call
        def timed_post(_):
            start = time.perf_counter()
            response = c.post("/v1/recommendations", json=body)
            return response, time.perf_counter() - start

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(timed_post, range(6)))
        codes = sorted(r.status_code for r, _ in responses)
        assert 504 not in codes and codes.count(200) >= 1 and 429 in codes, codes
        for response, seconds in responses:
            if response.status_code == 429:
                assert seconds < 0.5 and int(response.headers["retry-after"]) >= 1  # refused at once
                assert "timeout" in response.json()["error"]["message"]
        health = c.get("/healthz").json()
        assert health["rejected_queue_too_long"] == codes.count(429) and health["timed_out"] == 0
