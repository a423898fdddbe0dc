"""Load test of `recgen serve`: N concurrent clients POST /v1/recommendations for random users.

    python benchmarks/server_load.py --clients 8 --duration 120 --reasons both

Starts `recgen serve` (real default models, ml-100k) on a free loopback port, waits until it is healthy,
runs one bounded phase per reasons setting (each stops itself after ``--duration`` seconds; requests in
flight then are finished and counted), stops the server and writes ``<out>.json`` and ``<out>.md``.
Only 127.0.0.1 is contacted. The load average is sampled during the run: the CPU is shared, so compare
runs only at similar load.
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

import httpx
import psutil
from loadkit import free_port, percentile, serve_command, start_server


class Sampler(threading.Thread):
    """Every ``every`` seconds: 1-minute load average, machine CPU %, and the server process's CPU %."""

    def __init__(self, server_pid: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[dict] = []
        self._stop_event = threading.Event()
        self.proc = psutil.Process(server_pid)
        self.proc.cpu_percent(None)
        psutil.cpu_percent(None)

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            try:
                server_cpu = self.proc.cpu_percent(None)
            except psutil.Error:
                server_cpu = None
            self.samples.append({"t": round(time.time(), 1), "load1": os.getloadavg()[0],
                                 "machine_cpu_pct": psutil.cpu_percent(None), "server_cpu_pct": server_cpu})

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_phase(url: str, users: list[str], clients: int, duration: float, reasons: bool, k: int, seed: int,
              timeout: float) -> dict:
    records: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        with httpx.Client(base_url=url, timeout=timeout) as http:
            while time.perf_counter() < deadline:  # bounded: no new request after the deadline
                user = rng.choice(users)
                sent = time.perf_counter()
                body = {"user": user, "k": k, "mode": "score", "reasons": reasons}
                try:
                    response = http.post("/v1/recommendations", json=body)
                    status = response.status_code
                    served = response.json().get("seconds") if status == 200 else None
                    error = None if status == 200 else response.text[:200]
                except httpx.HTTPError as exc:
                    status, served, error = None, None, repr(exc)[:200]
                done = time.perf_counter()
                with lock:
                    records.append({"client": number, "user": user, "sent": sent - start, "latency": done - sent,
                                    "status": status, "service_s": served, "error": error})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in records if r["status"] == 200]
    in_window = [r for r in ok if r["sent"] + r["latency"] <= duration]
    latencies = [r["latency"] for r in ok]
    service = [r["service_s"] for r in ok if r["service_s"] is not None]
    errors: dict[str, int] = {}
    for r in records:
        if r["status"] != 200:
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    rnd = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {
        "reasons": reasons, "k": k, "clients": clients, "duration_s": duration, "wall_s": round(wall, 1),
        "requests": len(records), "ok": len(ok), "errors": sum(errors.values()), "errors_by_status": errors,
        "throughput_rps": round(len(in_window) / duration, 3),            # completions inside the window
        "throughput_incl_drain_rps": round(len(ok) / wall, 3),            # all completions / wall time
        "latency_s": {"p50": rnd(percentile(latencies, 50)), "p95": rnd(percentile(latencies, 95)),
                      "p99": rnd(percentile(latencies, 99)), "mean": rnd(statistics.mean(latencies)) if latencies else None,
                      "max": rnd(max(latencies)) if latencies else None},
        "service_s": {"p50": rnd(percentile(service, 50)), "p95": rnd(percentile(service, 95)),
                      "mean": rnd(statistics.mean(service)) if service else None},
        "first_errors": [r["error"] for r in records if r["error"]][:5],
    }


def summarise_load(samples: list[dict]) -> dict:
    if not samples:
        return {}
    load = [s["load1"] for s in samples]
    server = [s["server_cpu_pct"] for s in samples if s["server_cpu_pct"] is not None]
    machine = [s["machine_cpu_pct"] for s in samples]
    return {"load1_min": round(min(load), 2), "load1_mean": round(statistics.mean(load), 2),
            "load1_max": round(max(load), 2), "machine_cpu_pct_mean": round(statistics.mean(machine), 1),
            "server_cpu_pct_mean": round(statistics.mean(server), 1) if server else None, "samples": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--reasons", choices=["on", "off", "both"], default="both")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--server-timeout", type=float, default=600.0, help="--timeout passed to recgen serve")
    parser.add_argument("--out", default="eval/results/serving/server_load")
    parser.add_argument("--render-only", action="store_true", help="rewrite <out>.md from an existing <out>.json")
    args = parser.parse_args()
    if args.render_only:
        out = Path(args.out)
        out.with_suffix(".md").write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
        return

    from recgen import load_dataset

    users = sorted(load_dataset(args.dataset).users, key=lambda u: (len(u), u))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = serve_command(args.dataset, port, "--max-concurrency", str(max(16, 2 * args.clients)),
                        "--timeout", str(args.server_timeout), "--log-level", "warning")
    result: dict = {
        "command": "python " + " ".join(sys.argv), "server_command": " ".join(["recgen", *cmd[3:]]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "load_avg_before": [round(x, 2) for x in os.getloadavg()]},
        "dataset": args.dataset, "users": len(users), "seed": args.seed, "out": str(out),
    }
    server, startup = start_server(cmd, url, "server-load")
    try:
        result["server_startup_s"] = round(startup, 1)
        httpx.post(url + "/v1/recommendations", json={"user": users[0], "k": args.k}, timeout=600)  # warm-up
        phases = {"on": [True], "off": [False], "both": [True, False]}[args.reasons]
        result["phases"] = []
        for reasons in phases:
            sampler = Sampler(server.pid)
            sampler.start()
            phase = run_phase(url, users, args.clients, args.duration, reasons, args.k, args.seed,
                              args.request_timeout)
            sampler.stop()
            phase["load"] = summarise_load(sampler.samples)
            phase["load_samples"] = sampler.samples
            result["phases"].append(phase)
            print(json.dumps({k: v for k, v in phase.items() if k != "load_samples"}, indent=1), flush=True)
        result["server_health_after"] = httpx.get(url + "/healthz", timeout=10).json()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(out.with_suffix(".md").read_text())


def markdown(result: dict) -> str:
    rows = []
    for p in result["phases"]:
        lat, svc, load = p["latency_s"], p["service_s"], p["load"]
        rows.append(f"| {'on' if p['reasons'] else 'off'} | {p['k']} | {p['clients']} | {p['wall_s']} | {p['ok']} | "
                    f"{p['errors']} {p['errors_by_status'] or ''} | {p['throughput_rps']} | {lat['p50']} | {lat['p95']} | "
                    f"{lat['max']} | {svc['p50']} | {load.get('load1_mean')} ({load.get('load1_min')}–{load.get('load1_max')}) | "
                    f"{load.get('server_cpu_pct_mean')} |")
    m = result["machine"]
    return f"""# `recgen serve` under load ({result['dataset']}, default models, CPU)

Command: `{result['command']}`
Server: `{result['server_command']}` (started in {result.get('server_startup_s')} s, incl. model load)
Machine: {m['cpus']} cores, {m['memory_gb']} GB, Python {m['python']}; load average before {m['load_avg_before']},
after {result['load_avg_after']}. Started {result['started_at']}. The CPU is shared with other work: the
load average during each phase is in the table (1-minute load, mean and range; 2.0 = both cores busy).

Each client loops: random ml-100k user → `POST /v1/recommendations` (score mode, k items, retrieval of 20
candidates + one LM ranking pass + k reasons when on) until the phase ends. One LM worker serves all
requests in turn, so latency ≈ queue length × service time.

| reasons | k | clients | wall s | ok | errors | req/s | p50 s | p95 s | max s | service p50 s | load avg (min–max) | server CPU % |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

req/s: successful requests completed inside the phase window / window length (requests still in flight at the
end are finished and counted in the latencies, not in req/s). p50/p95/max: client-side latency of successful
requests (queueing included); service: time the server spent computing one request (queueing excluded).
Server CPU %: the server process's CPU use (100 = one full core; the machine has {m['cpus']}). Raw per-phase numbers and load samples: `{Path(result['out']).name}.json`.
"""


if __name__ == "__main__":
    main()
