"""`recgen serve --backend vllm` started as a user would, stopped by PID: no process it started is left.

Runs in the vLLM venv after tests/test_vllm_real.py (tests/test_vllm_cpu.py runs both), when that module's
engines are stopped. Before the fix, SIGTERM ended the server in ~1 s and left vLLM's EngineCore and Worker
(~3.5 GB) running, re-parented to PID 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed in this environment: run `make setup-vllm` and use "
                    ".venv-vllm/bin/python")

import httpx  # noqa: E402
import psutil  # noqa: E402
from conftest import shared_data_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Engine start (eager, 1 GiB KV cache) took 80-100 s on 2 loaded cores; this bounds a hang, not the load.
READY_TIMEOUT_S = 900
#: The server's own bound: close the engine, then 3 rounds of SIGTERM + 10 s grace + SIGKILL (recgen/cli/lifecycle.py),
#: plus uvicorn's 5 s graceful shutdown.
STOP_BOUND_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def dataset_argument(tmp_path: Path) -> str:
    found = shared_data_dir()
    if found:
        return str(found / "ml-100k")
    from builders import make_dataset

    from recgen.evaluation.synthetic import write_generic

    return str(write_generic(make_dataset(), tmp_path / "data"))


@pytest.mark.slow
def test_sigterm_stops_the_vllm_server_and_every_process_it_started(tmp_path):
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"lm": {"kv_cache_gib": 1.0, "enforce_eager": True, "max_model_len": 2048}}))
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "recgen.cli.main", "serve", "-d", dataset_argument(tmp_path), "--backend", "vllm",
               "--port", str(port), "--config", str(config)]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert server.poll() is None, f"the server exited ({server.returncode}) before it was ready:\n" \
                                          f"{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(2)
        text = " ".join(log.read_text().split())  # the console may wrap long lines
        assert "second stage:" in text and "on the vllm backend" in text and "adapters: none" in text, text[-3000:]
        started = psutil.Process(server.pid).children(recursive=True)
        assert started, "the vLLM engine runs in child processes (EngineCore, Worker); none were found"
        names = sorted({proc.name() for proc in started if alive(proc)})
        # the engine's processes run lm.nice (10) lower than the server's request lanes (recgen.lm.cpu_priority)
        lowered = {proc.pid: proc.nice() for proc in started if alive(proc)}
        assert set(lowered.values()) == {min(19, psutil.Process(server.pid).nice() + 10)}, lowered

        begun = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=STOP_BOUND_S + 30)
        took = time.monotonic() - begun
        left = [proc for proc in started if alive(proc)]
        left += [proc for proc in psutil.process_iter() if proc.pid != server.pid and alive(proc)
                 and _session(proc) == server.pid and proc not in left]
        assert not left, f"left running after SIGTERM ({took:.1f} s): {[(p.pid, p.name()) for p in left]} of {names}"
        assert took < STOP_BOUND_S, f"stopping took {took:.1f} s"
        print(f"stopped {len(started)} processes ({names}) in {took:.1f} s")
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _session(proc: psutil.Process) -> int | None:
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None
