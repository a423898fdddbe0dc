"""LM work runs at a lower CPU priority than the requests that need no LM (Linux nice values).

On a machine with few cores the LM takes every core it is given, and a ranked list that needs ~30 ms of CPU
then waits for time slices behind it: under 8 mixed clients on 2 cores, requests without reasons took 0.33 s
at p95 against 0.03 s alone (eval/results/serving/NOTES.md, session 33). Priority only decides who runs first
when cores are short; an idle machine still gives LM work every core. The one thread that calls the backend
(:class:`~recgen.lm.scheduler.LMScheduler`'s) lowers itself before its first call, so the threads torch's
OpenMP starts from it inherit the value; an in-process vLLM engine's processes are lowered once started.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: The highest nice value (lowest priority) Linux allows.
MAX_NICE = 19


def lower_this_thread(by: int) -> int | None:
    """Raise the calling thread's nice value by ``by`` (capped at 19); its new value, None where the platform
    has no per-thread nice (Linux has: ``setpriority`` on a thread id applies to that thread only)."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + by))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as exc:
        log.warning("could not lower the LM thread's CPU priority: %s", exc)
        return None


def lower_processes(pids: Iterable[int], by: int) -> dict[int, int]:
    """Raise the nice value of every thread of each process by ``by`` (threads and processes they start later
    inherit it);
    returns pid -> new value for the ones lowered (a process that is gone is skipped)."""
    import psutil

    done = {}
    if by <= 0:
        return done
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for thread in process.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, thread.id) + by))
            done[pid] = process.nice()
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
        except (psutil.AccessDenied, OSError) as exc:
            log.warning("could not lower the CPU priority of LM process %d: %s", pid, exc)
    return done
