"""A short loopback load test (issue 12 robustness): the app under uvicorn on 127.0.0.1 with the tiny
recommender, 8 then 32 concurrent clients for 2 s each, chat and structured requests mixed. No errors, no
5xx (429 is admission control and allowed), and the process's RSS grows by less than 10 %.

The longer run against `recgen serve` with the real models is benchmarks/server_robustness.py."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time

import httpx
import psutil
import pytest
from conftest import REPO

from recgen.server.app import create_app
from recgen.server.serving import ServerSettings


def _bench():
    """The benchmark script as a module, importable the way `python benchmarks/server_robustness.py` runs it
    (its folder first on the path, for its sibling `loadkit`)."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("server_robustness", REPO / "benchmarks" / "server_robustness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live_url(tiny_recommender, dataset):
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(tiny_recommender, dataset, ServerSettings(max_concurrency=16, timeout=60))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(10)


def test_short_load_has_no_errors_and_bounded_memory(live_url, dataset):
    bench = _bench()
    users = sorted(dataset.sequences)
    me = psutil.Process(os.getpid())
    rss = lambda: me.memory_info().rss  # noqa: E731 - server and clients share this process here
    httpx.post(live_url + "/v1/chat/completions", timeout=60,
               json={"model": "recgen", "messages": [{"role": "user", "content": "comedy"}]})  # warm-up
    baseline = rss()
    phases = [bench.run_phase(live_url, clients, 2.0, users, rss, timeout=60) for clients in (8, 32)]
    result = bench.verdict(phases, baseline, rss())
    for phase in phases:
        print(f"\n{phase['clients']} clients: {phase['requests']} requests, {phase['ok']} ok, "
              f"{phase['rate_limited_429']} x 429, {phase['errors']} errors, p50 {phase['latency_ok_s']['p50']} s, "
              f"p95 {phase['latency_ok_s']['p95']} s, RSS {phase['rss_mb']}")
        assert phase["ok"] > 0, phase
        assert phase["errors"] == 0 and phase["server_errors_5xx"] == 0, phase["first_errors"]
    assert result["rss_growth_pct"] < 10, result
