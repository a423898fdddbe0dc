"""What the fit benchmarks share: `recgen fit --json` run as a user runs it, in a child process with its own cache,
measured by ``os.wait4`` (that process's own CPU seconds and peak RSS, not a running maximum over all children),
with the 1-minute load average before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def fit_env(cache: Path, code: Path = REPO) -> dict:
    """The environment of a fit by the checkout ``code`` (default: this one) with its own cache."""
    return {**os.environ, "PYTHONPATH": str(code), "RECGEN_CACHE_DIR": str(cache), "TOKENIZERS_PARALLELISM": "false",
            "COLUMNS": "400"}


def run_fit(data: str | Path, folder: Path, args: list[str], code: Path = REPO, cores: set[int] | None = None) -> dict:
    """One `recgen fit -d data --json *args` by ``code`` (cwd and PYTHONPATH), cache ``folder/cache``, output in
    ``folder``; pinned to ``cores`` when given. Its summary with wall, CPU and peak RSS; exits with the log's tail
    if the fit fails."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "recgen.cli.main", "fit", "-d", str(data), "--json", *args]
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    load, started = load_1min(), time.perf_counter()
    with open(folder / "stdout.json", "wb") as out, open(folder / "stderr.log", "wb") as err:
        proc = subprocess.Popen(command, env=fit_env(folder / "cache", code), cwd=code, stdout=out, stderr=err,
                                preexec_fn=pin)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fit by {code.name} failed: {(folder / 'stderr.log').read_text(errors='replace')[-3000:]}")
    summary = json.loads((folder / "stdout.json").read_text())
    return {"wall_seconds": round(wall, 1), "client_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "client_peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "load_before": load, "load_after": load_1min(),
            "chosen": summary["chosen"], "stages": summary["stages"], "fusion_fit_seconds": summary["fusion_fit_seconds"],
            **({"ran_on": summary["ran_on"]} if "ran_on" in summary else {})}
