"""A Dask cluster on this machine, started the way a user starts one: ``dask scheduler`` and N ``dask worker``
processes (the installed CLI, loopback, no dashboard), each in its own session so one whole worker can be killed.

Why here: trying ``recgen fit --cluster`` on one machine, the cluster test and the cluster benchmark all need the
same real cluster; one way to start and stop it. Needs the ``cluster`` extra (``pip install 'recgen[cluster]'``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

#: Seconds a worker gets to leave after SIGTERM before it is killed.
STOP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalDaskCluster:
    """``dask scheduler`` + ``workers`` x ``dask worker --nthreads 1`` on 127.0.0.1, logs in ``folder``
    (``scheduler.log``, ``worker0.log``, ...), processes started with ``env``; ready once every worker joined.
    A context manager: leaving it stops every process it started."""

    def __init__(self, folder: Path, workers: int = 2, env: dict | None = None, timeout: float = 300) -> None:
        from distributed import Client

        self.folder, self.env, self.procs = Path(folder), env, {}
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                                      "--no-dashboard"])
            for n in range(workers):
                self._start(f"worker{n}", ["worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                                           "--no-dashboard"])
            self.client = Client(self.address, timeout=timeout)
            self.client.wait_for_workers(workers, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, args: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """The whole process ``name`` (a worker's nanny and its child) at once, as when its machine dies."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        """SIGTERM to every process started, SIGKILL to any still there after :data:`STOP_SECONDS`."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> "LocalDaskCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
