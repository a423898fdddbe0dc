"""A served command stops every process it started: real child processes, real signals.

Each case runs in a subprocess of its own (a subreaper that stops *its* descendants must not be pytest itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from recgen.config import LMSettings
from recgen.lm.vllm_engine import kv_cache_bytes

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30

#: Three kinds of descendant: one that stops on SIGTERM, one that ignores it (must be killed), and an orphan
#: whose parent exited (re-parented to the subreaper, not to PID 1, so it can still be found and stopped).
SPAWN = textwrap.dedent("""
    import subprocess, sys
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    stubborn_code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                     "print('ready', flush=True); time.sleep(600)")
    polite = subprocess.Popen(sleeper)
    stubborn = subprocess.Popen([sys.executable, "-c", stubborn_code], stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()
    orphan_code = ("import subprocess, sys; "
                   "print(subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    orphan = int(subprocess.run([sys.executable, "-c", orphan_code, *sleeper], capture_output=True,
                                text=True, check=True).stdout)
    pids = {"polite": polite.pid, "stubborn": stubborn.pid, "orphan": orphan}
""")


def run_script(body: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", body], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stop_descendants_terminates_kills_the_stubborn_and_finds_orphans():
    body = ("from recgen.cli.lifecycle import become_subreaper, stop_descendants\n"
            "assert become_subreaper()\n" + SPAWN +
            "import json, psutil\n"
            "assert psutil.Process(pids['orphan']).ppid() == psutil.Process().pid, 'orphan not re-parented to us'\n"
            "killed = stop_descendants(grace_s=1.0)\n"
            "print(json.dumps({'pids': pids, 'killed': killed}), flush=True)\n")
    proc = run_script(body)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    try:
        assert result["killed"] == [result["pids"]["stubborn"]]  # only the one that ignored SIGTERM was killed
        assert not [name for name, pid in result["pids"].items() if alive(pid)]
    finally:
        kill_all(result["pids"].values())


def test_sigterm_inside_owned_processes_runs_close_then_stops_every_descendant(tmp_path):
    closed = tmp_path / "closed"
    body = ("import json, time\nfrom recgen.cli.lifecycle import owned_processes\n"
            f"with owned_processes(close=lambda: open({str(closed)!r}, 'w').write('yes'), grace_s=1.0):\n"
            + textwrap.indent(SPAWN, "    ") +
            "    print(json.dumps(pids), flush=True)\n"
            "    time.sleep(600)\n")
    proc = run_script(body)
    pids = json.loads(proc.stdout.readline())
    try:
        assert all(alive(pid) for pid in pids.values())
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        elapsed = time.monotonic() - started
        assert proc.returncode == 128 + signal.SIGTERM  # SIGTERM became a normal exit, so clean-up ran
        assert closed.read_text() == "yes"
        assert not [name for name, pid in pids.items() if alive(pid)], pids
        assert elapsed < 30, elapsed  # bounded: 1 s of grace per round, not the children's 600 s of sleep
    finally:
        kill_all(pids.values())
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize(("available_gib", "expected_gib"), [(64, 4.0), (8, 2.0), (1, 0.5)])
def test_kv_cache_on_cpu_is_a_share_of_free_memory_within_bounds(available_gib, expected_gib):
    assert kv_cache_bytes(LMSettings(), available_bytes=available_gib * GIB) == int(expected_gib * GIB)


def test_kv_cache_setting_wins_and_gpus_keep_vllms_own_default():
    assert kv_cache_bytes(LMSettings(kv_cache_gib=1.5), available_bytes=GIB) == int(1.5 * GIB)
    assert kv_cache_bytes(LMSettings(device="cuda")) is None
