"""kill -9 in the middle of `recgen batch`, then the same command again: every id exactly once, and the
results equal an uninterrupted run's. Runs the real CLI in subprocesses with a tiny random LM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

N_REQUESTS = 90


def _command(src: Path, out: Path, data_dir: Path, lm: str) -> list[str]:
    # --batch-size 1: a request's scores never depend on which others share its batch, so the resumed
    # run's results can be compared byte for byte with the uninterrupted one.
    return [sys.executable, "-m", "recgen.cli.main", "batch", "-i", str(src), "-o", str(out), "-d", str(data_dir),
            "--lm", lm, "--threads", "1", "--batch-size", "1", "--json"]


def _complete_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_leaves_every_id_once(tmp_path, synthetic_dataset_dir, tiny_lm_dir, dataset):
    users = dataset.users
    rows = [{"custom_id": f"req-{n:03d}", "user": users[n % len(users)], "k": 3 + n % 3,
             "mode": "generate" if n % 4 == 3 else "score", "reasons": n % 2 == 0} for n in range(N_REQUESTS)]
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}

    reference = tmp_path / "reference.jsonl"
    done = subprocess.run(_command(src, reference, synthetic_dataset_dir, tiny_lm_dir), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "results.jsonl"
    proc = subprocess.Popen(_command(src, out, synthetic_dataset_dir, tiny_lm_dir), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while _complete_lines(out) < N_REQUESTS // 4:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no progress from the batch job"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _complete_lines(out)
    assert N_REQUESTS // 4 <= killed_at < N_REQUESTS, "the kill landed after the job had finished"

    again = subprocess.run(_command(src, out, synthetic_dataset_dir, tiny_lm_dir), env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    got = _records(out)
    ids = [r["custom_id"] for r in got]
    counts = {"requests": N_REQUESTS, "lines_at_kill": killed_at, "skipped_on_rerun": summary["already_done"],
              "processed_on_rerun": summary["processed"], "final_lines": len(got), "distinct_ids": len(set(ids))}
    print("resume counts:", json.dumps(counts))
    assert len(ids) == len(set(ids)) == N_REQUESTS
    assert summary["already_done"] + summary["processed"] == N_REQUESTS
    assert sorted(ids) == sorted(r["custom_id"] for r in rows)
    assert all(r["error"] is None for r in got)
    assert {r["custom_id"]: r for r in got} == {r["custom_id"]: r for r in _records(reference)}
