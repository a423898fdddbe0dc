"""Bounded robustness load test of `recgen serve` on loopback: 8 and 32 concurrent clients, a few seconds each.

    python benchmarks/server_robustness.py --dataset ml-100k --duration 5
    python benchmarks/server_robustness.py --dataset ml-100k --lm /path/to/tiny-lm   # a quick smoke run

Each client loops until the phase's deadline, alternating ``POST /v1/chat/completions`` (one or two turns,
filters included) and ``POST /v1/recommendations`` (a random user). Per phase it reports latency p50/p95 of
the answered requests, how many got 429 (admission control, expected beyond ``--max-concurrency``), errors
(anything else that is not 200: 4xx, 5xx, timeouts, dropped connections) and the server's RSS before and
after. The targets (issue 12): 0 errors, 0 5xx, RSS growth under 10 %. Only 127.0.0.1 is contacted.
Writes ``eval/results/robustness/server_load.json`` (``--out``). The short pytest variant is
tests/test_server_load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import httpx
import psutil
from loadkit import free_port, percentile, serve_command, start_server

#: Chat openings and follow-ups the clients send (constraints, references, a reset).
OPENINGS = ["a funny space adventure", "something scary but not gory", "a romantic drama from the 90s",
            "action movies, not horror", "a quiet film for a rainy day", "animated films for kids"]
FOLLOW_UPS = ["not horror", "only after 1990", "more like the second one", "I have seen the first one",
              "show them again", "start over, comedies please"]
TARGETS = {"errors": 0, "server_errors_5xx": 0, "rss_growth_pct_below": 10.0}


def process_rss(pid: int) -> Callable[[], int]:
    """RSS in bytes of a process and its children (the server may spawn tokenizer/worker processes)."""
    def rss() -> int:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    return rss


def _chat_body(rng: random.Random, model: str, previous: str | None) -> dict:
    messages = [{"role": "user", "content": rng.choice(OPENINGS)}]
    if previous:
        messages += [{"role": "assistant", "content": previous}, {"role": "user", "content": rng.choice(FOLLOW_UPS)}]
    return {"model": model, "messages": messages, "recgen": {"k": 3}}


def run_phase(url: str, clients: int, duration: float, users: list[str], rss: Callable[[], int], *,
              headers: dict[str, str] | None = None, model: str = "recgen", seed: int = 0,
              timeout: float = 120.0) -> dict:
    """``clients`` threads, each sending requests back to back until ``duration`` seconds have passed."""
    records: list[dict] = []
    lock = threading.Lock()
    rss_before = rss()
    start = time.perf_counter()
    deadline = start + duration

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        previous = None
        with httpx.Client(base_url=url, timeout=timeout, headers=headers or {}) as http:
            turn = 0
            while time.perf_counter() < deadline:  # bounded: no new request after the deadline
                chat = turn % 2 == 0 or not users
                sent = time.perf_counter()
                try:
                    if chat:
                        response = http.post("/v1/chat/completions", json=_chat_body(rng, model, previous))
                        if response.status_code == 200:
                            previous = response.json()["choices"][0]["message"]["content"]
                    else:
                        response = http.post("/v1/recommendations",
                                             json={"user": rng.choice(users), "k": 3, "reasons": rng.random() < 0.5})
                    status, error = response.status_code, None if response.status_code in (200, 429) else response.text[:200]
                except httpx.HTTPError as exc:
                    status, error = None, repr(exc)[:200]
                with lock:
                    records.append({"kind": "chat" if chat else "recommendations", "status": status,
                                    "latency": time.perf_counter() - sent, "error": error})
                turn += 1
                if status == 429:
                    time.sleep(0.05)  # what a polite client does with Retry-After, shortened

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    rss_after = rss()
    ok = [r["latency"] for r in records if r["status"] == 200]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
    errors = [r for r in records if r["status"] not in (200, 429)]
    rnd = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {
        "clients": clients, "duration_s": duration, "wall_s": round(wall, 2), "requests": len(records),
        "ok": len(ok), "rate_limited_429": by_status.get("429", 0), "errors": len(errors),
        "server_errors_5xx": sum(n for s, n in by_status.items() if s.isdigit() and int(s) >= 500),
        "by_status": by_status, "throughput_ok_rps": round(len(ok) / wall, 2),
        "latency_ok_s": {"p50": rnd(percentile(ok, 50)), "p95": rnd(percentile(ok, 95)),
                         "max": rnd(max(ok)) if ok else None, "mean": rnd(statistics.mean(ok)) if ok else None},
        "rss_mb": {"before": round(rss_before / 2**20, 1), "after": round(rss_after / 2**20, 1)},
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 2),
        "first_errors": [r["error"] for r in errors][:5],
    }


def verdict(phases: list[dict], baseline_rss: int, final_rss: int) -> dict:
    growth = round(100 * (final_rss - baseline_rss) / baseline_rss, 2)
    errors = sum(p["errors"] for p in phases)
    five = sum(p["server_errors_5xx"] for p in phases)
    return {"errors": errors, "server_errors_5xx": five, "rss_growth_pct": growth,
            "passed": errors == TARGETS["errors"] and five == TARGETS["server_errors_5xx"]
            and growth < TARGETS["rss_growth_pct_below"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--lm", default=None, help="LM folder or name (default: the default LM)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--server-timeout", type=float, default=60.0, help="--timeout passed to recgen serve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="eval/results/robustness/server_load.json")
    args = parser.parse_args()

    from recgen import load_dataset

    users = sorted(load_dataset(args.dataset).users)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = serve_command(args.dataset, port, "--max-concurrency", str(args.max_concurrency),
                        "--timeout", str(args.server_timeout), "--log-level", "warning",
                        *(["--lm", args.lm] if args.lm else []))
    result: dict = {
        "command": "python " + " ".join(sys.argv), "server_command": " ".join(["recgen", *cmd[3:]]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "load_avg_before": [round(x, 2) for x in os.getloadavg()]},
    }
    server, startup = start_server(cmd, url, "robustness")
    try:
        result["server_startup_s"] = round(startup, 1)
        rss = process_rss(server.pid)
        for body in ({"user": users[0], "k": 3}, {"query": "comedy", "k": 3, "reasons": True}):  # warm-up
            httpx.post(url + "/v1/recommendations", json=body, timeout=600)
        httpx.post(url + "/v1/chat/completions", timeout=600, json=_chat_body(random.Random(0), "recgen", None))
        baseline = rss()
        result["rss_mb_after_warmup"] = round(baseline / 2**20, 1)
        result["phases"] = []
        for clients in args.clients:
            phase = run_phase(url, clients, args.duration, users, rss, seed=args.seed,
                              timeout=args.server_timeout + 30)
            result["phases"].append(phase)
            print(json.dumps(phase), flush=True)
        result["verdict"] = verdict(result["phases"], baseline, rss())
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["verdict"]), f"-> {out}")


if __name__ == "__main__":
    main()
