"""Stopping a long-running command together with every process it started.

vLLM's in-process engine runs in child processes (EngineCore, and its Worker below it). When ``recgen serve``
ended on SIGTERM they outlived it, re-parented to PID 1 and holding gigabytes. A served command therefore:
(1) becomes a *child subreaper* (Linux), so a grandchild orphaned by its parent's death is re-parented to us,
not to PID 1, and stays findable; (2) turns SIGTERM into a normal exit while it loads, so clean-up code runs;
(3) on the way out, asks each child to stop (SIGTERM), waits a bounded time, and kills what is left.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

import psutil

log = logging.getLogger(__name__)

#: prctl option: orphaned descendants are re-parented to this process instead of init.
_PR_SET_CHILD_SUBREAPER = 36
#: Seconds each child gets to stop on SIGTERM before it is killed.
GRACE_S = 10.0


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux only; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def stop_descendants(grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every descendant of this process, wait up to ``grace_s``, SIGKILL the rest.

    Returns the pids that had to be killed. Repeated until none is found, because a dying engine may start
    or orphan processes while we wait (orphans come back to us as their subreaper)."""
    killed: list[int] = []
    for _round in range(3):
        children = psutil.Process().children(recursive=True)
        if not children:
            break
        for child in children:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(children, timeout=grace_s)
        for child in alive:
            try:
                child.kill()
                killed.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace_s)
    return killed


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def owned_processes(close=None, grace_s: float = GRACE_S) -> Iterator[None]:
    """Run a block as the owner of every process it starts: on any exit (normal, SIGTERM, Ctrl-C, an error)
    ``close()`` is called first (e.g. the LM backend's own shutdown), then every remaining descendant is stopped."""
    become_subreaper()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        try:
            if close is not None:
                close()
        except Exception as exc:  # noqa: BLE001 - clean-up goes on; the processes are stopped below
            log.warning("closing the engine failed (%s: %s); stopping its processes", type(exc).__name__, exc)
        killed = stop_descendants(grace_s)
        if killed:
            log.warning("killed %d process(es) that did not stop on SIGTERM: %s", len(killed), killed)
        signal.signal(signal.SIGTERM, previous)
