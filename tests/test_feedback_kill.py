"""`kill -9` of a real `recgen serve` (started as a user starts it) while clients post events: every event the
server acknowledged is in the log afterwards, and a restarted server serves the statistics built from it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recgen.data.events import EventStore

N_ACKED = 150
CLIENTS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data_dir: Path, lm: str, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "recgen.cli.main", "serve", "--dataset", str(data_dir), "--lm", lm,
           "--port", str(port), "--log-level", "warning"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"recgen serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail(f"recgen serve did not start in time:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def test_no_acknowledged_event_is_lost_after_kill_9(synthetic_dataset_dir, tiny_lm_dir, tmp_path):
    env = {**os.environ, "RECGEN_STATE_DIR": str(tmp_path / "state"), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RECGEN_API_KEY", None)
    log = tmp_path / "server.log"
    proc, url = _start(synthetic_dataset_dir, tiny_lm_dir, env, log)
    acked: dict[str, dict] = {}
    lock = threading.Lock()
    stop = threading.Event()
    refused: list[str] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            top = c.post("/v1/recommendations", json={"user": "u1", "k": 1, "reasons": False}).json()
            rejected = top["recommendations"][0]["item_id"]
            assert c.post("/v1/feedback", json={"user": "u1", "item": rejected, "event": "reject",
                                                "event_id": "reject-u1"}).status_code == 200

        def client(number: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                n = 0
                while not stop.is_set():
                    body = {"user": f"kill-{number}", "item": str((number * 7 + n) % 60), "event": "purchase",
                            "event_id": f"c{number}-{n}"}
                    try:
                        r = c.post("/v1/feedback", json=body)
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code != 200:
                        refused.append(r.text)
                        return
                    with lock:
                        acked[body["event_id"]] = body
                    n += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acked) < N_ACKED and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # clients are still posting: some requests are in flight
        proc.wait(timeout=60)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        stop.set()
        _stop(proc)
    assert not refused, refused[:3]
    assert len(acked) >= N_ACKED, f"only {len(acked)} events acknowledged:\n{log.read_text()[-2000:]}"

    store = EventStore(tmp_path / "state" / "feedback" / "synthetic" / "events.sqlite", create=False)
    stored = {e.event_id: e for e in store.events()}
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} acknowledged events lost: {missing[:5]}"
    for event_id, body in acked.items():
        e = stored[event_id]
        assert (e.user, e.item, e.event) == (body["user"], body["item"], body["event"])
    store.close()

    # a restart replays the log: the log-only users exist, u1's rejected item stays excluded
    proc, url = _start(synthetic_dataset_dir, tiny_lm_dir, env, log)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/recommendations", json={"user": "kill-0", "k": 3, "reasons": False})
            assert r.status_code == 200, r.text
            r = c.post("/v1/recommendations", json={"user": "u1", "k": 5, "reasons": False})
            assert rejected not in [x["item_id"] for x in r.json()["recommendations"]]
            assert c.delete("/v1/users/kill-0").status_code == 200
            assert c.post("/v1/recommendations", json={"user": "kill-0", "k": 3}).status_code == 404
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
