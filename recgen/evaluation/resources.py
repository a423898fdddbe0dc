"""Per-stage wall time, CPU time and peak resident memory (psutil RSS sampled in a background thread)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psutil


class StageMonitor:
    """``with monitor.stage("fit"): ...`` records wall seconds, CPU seconds (user+system) and peak RSS."""

    def __init__(self, interval: float = 0.05) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.stages: dict[str, dict] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        try:
            return self.process.memory_info().rss
        except psutil.Error:  # pragma: no cover - process gone
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss())

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)

    @contextmanager
    def stage(self, name: str):
        self._peak = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        wall, cpu = time.perf_counter(), self._cpu()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            previous = self.stages.get(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
            self.stages[name] = {
                "wall_s": round(previous["wall_s"] + time.perf_counter() - wall, 3),
                "cpu_s": round(previous["cpu_s"] + self._cpu() - cpu, 3),
                "peak_rss_mb": round(max(previous["peak_rss_mb"], self._peak / 2**20), 1),
            }
