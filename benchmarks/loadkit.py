"""What the server load benchmarks share: a free loopback port, nearest-rank percentiles, and starting
`recgen serve` the way a user would and waiting (bounded) until it is healthy. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(round(q / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[min(rank, len(ordered)) - 1]


def serve_command(dataset: str, port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "recgen.cli.main", "serve", "--dataset", dataset, "--host", "127.0.0.1",
            "--port", str(port), *options]


def start_server(cmd: list[str], url: str, name: str, limit_s: float = 900,
                 env: dict | None = None, cwd: str | None = None) -> tuple[subprocess.Popen, float]:
    """Start ``cmd`` (its output to a temporary log; ``env``, ``cwd``: default this process's) and wait for
    ``/healthz``; (process, seconds to healthy). Exits with the log's path when the server dies or is not
    healthy within ``limit_s``."""
    log_path = Path(tempfile.gettempdir()) / f"recgen-{name}-{url.rsplit(':', 1)[-1]}.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    while True:
        if server.poll() is not None:
            sys.exit(f"recgen serve exited with {server.returncode}; see {log_path}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return server, time.perf_counter() - start
        except httpx.HTTPError:
            pass
        if time.perf_counter() - start > limit_s:
            server.kill()
            sys.exit(f"recgen serve did not become healthy in {limit_s:.0f} s; see {log_path}")
        time.sleep(0.5)
