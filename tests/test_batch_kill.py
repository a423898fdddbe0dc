"""Fault injection: ``kill -9`` of a real ``recgen batch`` process at random points (while loading, between
writes, mid-write), resuming with the same command each time; at the end no id is lost and none is duplicated.
While one job runs, a second job on the same output is refused by the output's lock.

The short variant (2 kills: one mid-run, one during start-up) runs in the fast suite; the 10-kill variant is marked slow.
Subprocesses use the tiny random LM and the synthetic dataset, like tests/test_batch_resume.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _command(src: Path, out: Path, data_dir: Path, lm: str) -> list[str]:
    return [sys.executable, "-m", "recgen.cli.main", "batch", "-i", str(src), "-o", str(out), "-d", str(data_dir),
            "--lm", lm, "--threads", "1", "--batch-size", "1", "--json"]


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_and_resume(tmp_path, data_dir, lm, dataset, *, kills: int, n_requests: int, seed: int,
                     check_lock: bool = False, loading_plan: list[bool] | None = None) -> dict:
    """``kills`` SIGKILLs at random points, then a final run; ``loading_plan[i]`` forces kill ``i`` to land during
    start-up (True) or after some new result lines (False); by default about a quarter land during start-up."""
    rng = random.Random(seed)
    users = dataset.users
    rows = [{"custom_id": f"req-{n:03d}", "user": users[n % len(users)], "k": 2 + n % 3,
             "mode": "generate" if n % 5 == 4 else "score", "reasons": n % 4 == 0} for n in range(n_requests)]
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    command = _command(src, out, data_dir, lm)
    injected, points, refused, torn = 0, [], 0, 0
    for number in range(kills):
        before = _complete_lines(out)
        loading = loading_plan[number] if loading_plan else (number > 0 and rng.random() < 0.25)
        target = before + (0 if loading else rng.randint(1, 6))
        log = tmp_path / f"run-{number}.stderr"
        with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            started, deadline = time.monotonic(), time.monotonic() + 240
            if loading:
                time.sleep(rng.uniform(0.2, 3.0))
            else:
                while _complete_lines(out) < target and proc.poll() is None:
                    assert time.monotonic() < deadline, "no progress from the batch job"
                    time.sleep(0.002)
                time.sleep(rng.uniform(0, 0.03))  # between writes or in the middle of one
            if check_lock and number == 0 and proc.poll() is None:
                os.kill(proc.pid, signal.SIGSTOP)  # frozen while holding the lock
                second = subprocess.run(command, env={**env, "COLUMNS": "500"}, capture_output=True, text=True,
                                        timeout=120)
                assert second.returncode == 2, second.stdout + second.stderr
                assert f"another recgen batch is writing {out}" in " ".join((second.stdout + second.stderr).split())
                refused += 1
            assert proc.poll() is None, f"the job ended by itself ({proc.returncode}): {log.read_text()[-2000:]}"
            os.kill(proc.pid, signal.SIGKILL)
            injected += 1
            points.append({"lines_before": before, "seconds_after_start": round(time.monotonic() - started, 2),
                           "during_loading": loading})
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
        torn += out.exists() and not out.read_bytes().endswith(b"\n") and out.stat().st_size > 0
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = [r["custom_id"] for r in records]
    wanted = {r["custom_id"] for r in rows}
    figures = {"requests": n_requests, "kills_injected": injected, "lost": len(wanted - set(ids)),
               "duplicated": len(ids) - len(set(ids)), "unexpected": len(set(ids) - wanted),
               "torn_tails_left": torn,
               "second_job_refused": refused, "rerun": json.loads(final.stdout)["already_done"], "kill_points": points}
    print("kill figures:", json.dumps(figures))
    assert injected == kills
    assert (figures["lost"], figures["duplicated"], figures["unexpected"]) == (0, 0, 0)
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in records)
    return figures


def test_two_kills_then_resume_lose_and_duplicate_nothing(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset):
    figures = _kill_and_resume(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset, kills=2, n_requests=60,
                               seed=7, check_lock=True, loading_plan=[False, True])
    assert figures["second_job_refused"] == 1


@pytest.mark.slow
@pytest.mark.release
def test_ten_random_kills_then_resume_lose_and_duplicate_nothing(tmp_path, synthetic_dataset_dir, tiny_lm_dir,
                                                                 dataset):
    seed = int(os.environ.get("RECGEN_KILL_SEED", "2026"))
    _kill_and_resume(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset, kills=10, n_requests=150, seed=seed)
