"""Load test of `recgen serve`: N concurrent clients POST /v1/recommendations for random users.

    python benchmarks/server_load.py --clients 8 --duration 120 --reasons both
    python benchmarks/server_load.py --mixed --clients 1 8 32 --duration 60 \
        --backend transformers --backend vllm=/path/to/.venv-vllm/bin/python

Starts `recgen serve` (real default models, ml-100k) on a free loopback port, waits until it is healthy,
runs one bounded phase per reasons setting (each stops itself after ``--duration`` seconds; requests in
flight then are finished and counted), stops the server and writes ``<out>.json`` and ``<out>.md``.

``--mixed`` (issue 25): each client sends a random mix, 40 % recommendations with reasons (streamed: the
time to the first event, the ranked items, is the time to first recommendation), 30 % without reasons and
30 % chat turns (with reasons); a client told 429 waits ``Retry-After`` seconds, as a well-behaved one
does. Every ``--backend`` gets its own server, all started up front, and the cells (backend × clients) run
interleaved, so a change of machine load hits every backend alike. The servers'
RSS (with their child processes: vLLM's engine) is sampled over time; errors are counted by status (429
apart). Only 127.0.0.1 is contacted. The load average is sampled during the run: the CPU is shared, so
compare runs only at similar load.
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


def run_clients(client, clients: int) -> None:
    """``client(number)`` in one thread per client, all started before any is waited for."""
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def non_200(records: list[dict]) -> dict[str, int]:
    """Answers other than 200 by status (``"None"``: no answer)."""
    counts: dict[str, int] = {}
    for r in records:
        if r["status"] != 200:
            counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return counts


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

    run_clients(client, clients)
    wall = time.perf_counter() - start
    ok = [r for r in records if r["status"] == 200]
    in_window = [r for r in ok if r["sent"] + r["latency"] <= duration]
    latencies = [r["latency"] for r in ok]
    service = [r["service_s"] for r in ok if r["service_s"] is not None]
    errors = non_200(records)
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
    parser.add_argument("--clients", type=int, nargs="+", default=[8], help="several with --mixed")
    parser.add_argument("--mixed", action="store_true", help="issue 25's mixed traffic, cells interleaved")
    parser.add_argument("--backend", action="append", default=None,
                        help="--mixed: a backend to serve, NAME, NAME=PYTHON (its interpreter) or either with @CHECKOUT "
                             "(serve that recgen checkout's code, labelled NAME@<its folder name>: before/after "
                             "in one run); repeatable")
    parser.add_argument("--config", help="--mixed: config file passed to every server (e.g. lm.kv_cache_gib)")
    parser.add_argument("--repeats", type=int, default=1, help="--mixed: rounds over the cells")
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
        data = json.loads(out.with_suffix(".json").read_text())
        out.with_suffix(".md").write_text(markdown_mixed(data) if "cells" in data else markdown(data))
        return

    from recgen import load_dataset

    users = sorted(load_dataset(args.dataset).users, key=lambda u: (len(u), u))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.mixed:
        result = {"command": "python " + " ".join(_portable(a) for a in sys.argv), "started_at": datetime.now(timezone.utc).isoformat(
                      timespec="seconds"),
                  "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                              "python": platform.python_version(),
                              "load_avg_before": [round(x, 2) for x in os.getloadavg()]},
                  "dataset": args.dataset, "users": len(users), "seed": args.seed, "out": str(out), "k": args.k,
                  "duration_s": args.duration, "mix": dict(MIX)}
        run_mixed(args, users, result)
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown_mixed(result))
        print(out.with_suffix(".md").read_text())
        return
    args.clients = args.clients[0]
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


#: The mixed traffic of issue 25: (kind, share).
MIX = (("reasons", 0.4), ("no_reasons", 0.3), ("chat", 0.3))
CHAT_OPENINGS = ["a funny space adventure", "something scary but not gory", "a romantic drama from the 90s",
                 "action movies, not horror", "a quiet film for a rainy day", "animated films for kids"]


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a server and every process it started (vLLM's engine core and workers)."""
    return sum(rss_by_process(proc).values())


def rss_by_process(proc: psutil.Process) -> dict[str, int]:
    """RSS of the server and of each process it started, by name ("server", then e.g. VLLM::EngineCore): which
    of them grows, when the total does."""
    out: dict[str, int] = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            name = "server" if p.pid == proc.pid else p.name()
            out[name] = out.get(name, 0) + p.memory_info().rss
        except psutil.Error:
            pass
    return out


class RssSampler(Sampler):
    """:class:`Sampler` plus the server tree's RSS, every ``every`` seconds, for the whole run."""

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            try:
                parts, cpu = rss_by_process(self.proc), self.proc.cpu_percent(None)
            except psutil.Error:
                parts, cpu = {}, None
            self.samples.append({"t": round(time.time(), 1), "load1": os.getloadavg()[0],
                                 "rss_mb": round(sum(parts.values()) / 2**20) if parts else None,
                                 "rss_mb_by_process": {n: round(v / 2**20) for n, v in parts.items()},
                                 "server_cpu_pct": cpu})


def _sse_events(response: httpx.Response):
    """The JSON payloads of a server-sent event stream, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def mixed_request(http: httpx.Client, kind: str, user: str, k: int, rng: random.Random) -> dict:
    """One request of ``kind``; its status, total latency, time to first recommendation (the ranked items;
    streamed requests only) and whether its reasons were missing (the deadline passed)."""
    sent = time.perf_counter()
    ttfr, missing, error = None, None, None
    if kind == "reasons":
        body = {"user": user, "k": k, "mode": "score", "reasons": True, "stream": True}
        with http.stream("POST", "/v1/recommendations", json=body) as response:
            status, headers = response.status_code, response.headers
            if status != 200:
                response.read()
                error = response.text[:200]
            else:
                for event in _sse_events(response):
                    if "error" in event:
                        status, error = 599, json.dumps(event)[:200]  # an error event in a 200 stream
                    elif event.get("object") == "recommendations" and ttfr is None:
                        ttfr = time.perf_counter() - sent
                    elif event.get("object") == "recommendations.done":
                        missing = event["reasons_missing"]
    elif kind == "no_reasons":
        response = http.post("/v1/recommendations", json={"user": user, "k": k, "mode": "score", "reasons": False})
        headers = response.headers
        status, error = response.status_code, None if response.status_code == 200 else response.text[:200]
    else:
        body = {"model": "recgen", "messages": [{"role": "user", "content": rng.choice(CHAT_OPENINGS)}],
                "recgen": {"user_id": user, "k": k}}
        response = http.post("/v1/chat/completions", json=body)
        headers = response.headers
        status, error = response.status_code, None if response.status_code == 200 else response.text[:200]
        if status == 200:
            missing = response.json()["recgen"].get("reasons_missing")
    retry_after = headers.get("retry-after") if status == 429 else None
    return {"kind": kind, "status": status, "latency": time.perf_counter() - sent, "ttfr": ttfr,
            "reasons_missing": missing, "error": error, "retry_after": retry_after}


def run_mixed_phase(url: str, users: list[str], clients: int, duration: float, k: int, seed: int,
                    timeout: float) -> dict:
    records: list[dict] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration
    kinds, weights = zip(*MIX)

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        with httpx.Client(base_url=url, timeout=timeout) as http:
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                sent = time.perf_counter() - start
                try:
                    record = mixed_request(http, kind, rng.choice(users), k, rng)
                except httpx.HTTPError as exc:
                    record = {"kind": kind, "status": None, "latency": None, "ttfr": None, "reasons_missing": None,
                              "error": repr(exc)[:200]}
                record["sent"] = sent
                with lock:
                    records.append(record)
                if record["status"] == 429:  # a well-behaved client waits as told (bounded by the phase)
                    wait = float(record.get("retry_after") or 1)
                    time.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

    run_clients(client, clients)
    wall = time.perf_counter() - start
    rnd = lambda x: None if x is None else round(x, 3)  # noqa: E731
    out = {"clients": clients, "duration_s": duration, "wall_s": round(wall, 1), "requests": len(records),
           "by_kind": {}}
    for kind in kinds:
        mine = [r for r in records if r["kind"] == kind]
        ok = [r for r in mine if r["status"] == 200]
        in_window = [r for r in ok if r["sent"] + r["latency"] <= duration]
        lat = [r["latency"] for r in ok]
        ttfr = [r["ttfr"] for r in ok if r["ttfr"] is not None]
        statuses = non_200(mine)
        out["by_kind"][kind] = {
            "requests": len(mine), "ok": len(ok), "lists_per_s": round(len(in_window) / duration, 3),
            "latency_s": {"p50": rnd(percentile(lat, 50)), "p95": rnd(percentile(lat, 95)),
                          "max": rnd(max(lat)) if lat else None},
            "ttfr_s": {"p50": rnd(percentile(ttfr, 50)), "p95": rnd(percentile(ttfr, 95))} if ttfr else None,
            "reasons_missing": sum(1 for r in ok if r["reasons_missing"]),
            "status_429": statuses.get("429", 0),
            "status_429_without_retry_after": sum(1 for r in mine if r["status"] == 429 and not r.get("retry_after")),
            "server_errors_5xx": sum(n for st, n in statuses.items() if st not in ("None", "429") and int(st) >= 500),
            "errors": sum(n for st, n in statuses.items() if st != "429"), "errors_by_status": statuses,
            "first_errors": [r["error"] for r in mine if r["error"]][:3],
        }
    return out


def _portable(arg: str) -> str:
    """A --backend NAME@CHECKOUT argument with the checkout's folder name only: no path of this machine in a
    result file."""
    spec, at, checkout = arg.partition("@")
    return f"{spec}@<checkout {Path(checkout).name}>" if at and os.sep in checkout else arg


def run_mixed(args, users: list[str], result: dict) -> None:
    """Every backend's server up at once; the cells (clients × backend) interleaved; RSS sampled throughout."""
    servers = {}
    for spec in args.backend or ["transformers"]:
        spec, _, checkout = spec.partition("@")
        backend, _, python = spec.partition("=")
        name = f"{backend}@{Path(checkout).resolve().name}" if checkout else backend
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        options = ["--max-concurrency", str(max(16, 2 * max(args.clients))), "--timeout", str(args.server_timeout),
                   "--log-level", "warning"]
        if backend != "transformers":
            options += ["--backend", backend]
        if args.config:
            options += ["--config", args.config]
        cmd = serve_command(args.dataset, port, *options)
        if python:
            cmd[0] = str(Path(python).absolute())  # the servers of a checkout run in its folder
        result.setdefault("servers", {})[name] = {"command": " ".join(["recgen", *cmd[3:]])}
        code = str(Path(checkout).resolve()) if checkout else None  # `python -m` imports from its folder first
        env = {**os.environ, "PYTHONPATH": code} if code else None
        if code and args.config:  # the server runs in the checkout's folder: the config as seen from here
            cmd[cmd.index("--config") + 1] = str(Path(args.config).resolve())
        server, startup = start_server(cmd, url, f"server-load-{backend}", env=env, cwd=code)
        servers[name] = (server, url)
        result["servers"][name]["startup_s"] = round(startup, 1)
    samplers = {name: RssSampler(server.pid) for name, (server, _) in servers.items()}
    try:
        for name, (_, url) in servers.items():  # warm-up: every path once (loads the LM, compiles)
            httpx.post(url + "/v1/recommendations", json={"user": users[0], "k": args.k}, timeout=900)
            httpx.post(url + "/v1/chat/completions", timeout=900, json={
                "model": "recgen", "messages": [{"role": "user", "content": "comedy"}], "recgen": {"k": args.k}})
            result["servers"][name]["rss_mb_after_warmup"] = round(tree_rss(psutil.Process(servers[name][0].pid)) / 2**20)
        for sampler in samplers.values():
            sampler.start()
        result["cells"] = []
        for repeat in range(args.repeats):
            for clients in args.clients:
                for name, (_, url) in servers.items():
                    before = os.getloadavg()[0]
                    cell = run_mixed_phase(url, users, clients, args.duration, args.k, args.seed + repeat, args.request_timeout)
                    cell.update(backend=name, repeat=repeat, load1_before=round(before, 2),
                                load1_after=round(os.getloadavg()[0], 2))
                    result["cells"].append(cell)
                    print(json.dumps(cell), flush=True)
        for name, (_, url) in servers.items():
            result["servers"][name]["health_after"] = httpx.get(url + "/healthz", timeout=10).json()
    finally:
        for sampler in samplers.values():
            sampler.stop()
        for name, (server, _) in servers.items():
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            result["servers"][name]["rss_samples"] = samplers[name].samples


def markdown_mixed(result: dict) -> str:
    rows = []
    for c in result["cells"]:
        r, n, ch = c["by_kind"]["reasons"], c["by_kind"]["no_reasons"], c["by_kind"]["chat"]
        bad = {kind: (v["errors"], v["server_errors_5xx"], v["status_429"]) for kind, v in c["by_kind"].items()}
        rows.append(
            f"| {c['backend']} | {c['clients']} | {c['requests']} | {r['ok']} ({r['lists_per_s']}/s) | "
            f"{r['latency_s']['p50']} / {r['latency_s']['p95']} | "
            f"{(r['ttfr_s'] or {}).get('p50')} / {(r['ttfr_s'] or {}).get('p95')} | {r['reasons_missing']} | "
            f"{n['ok']}: {n['latency_s']['p50']} / {n['latency_s']['p95']} | {ch['ok']}: {ch['latency_s']['p50']} / "
            f"{ch['latency_s']['p95']} | {sum(b[0] for b in bad.values())} / {sum(b[1] for b in bad.values())} / "
            f"{sum(b[2] for b in bad.values())} | {c['load1_before']}→{c['load1_after']} |")
    servers = []
    for name, s in result["servers"].items():
        rss = [x["rss_mb"] for x in s.get("rss_samples", []) if x.get("rss_mb")]
        servers.append(f"- {name}: `{s['command']}`, healthy in {s['startup_s']} s; RSS (server + children) after "
                       f"warm-up {s.get('rss_mb_after_warmup')} MB, during the run {min(rss) if rss else None}–"
                       f"{max(rss) if rss else None} MB (first {rss[0] if rss else None}, last {rss[-1] if rss else None}; "
                       f"{len(rss)} samples)")
    m = result["machine"]
    note = f"\n**Note:** {result['note']}.\n" if result.get("note") else ""
    return f"""# `recgen serve` under mixed load ({result['dataset']}, default models, fitted fused ranker, CPU)
{note}
Command: `{result['command']}`
Machine: {m['cpus']} cores, {m['memory_gb']} GB, Python {m['python']}; load average before {m['load_avg_before']},
after {result['load_avg_after']}. Started {result['started_at']}. The CPU is shared with other jobs: the 1-minute
load average before → after each cell is in the table (2.0 = both cores busy).

{chr(10).join(servers)}

Each client loops for {result['duration_s']} s per cell: 40 % `POST /v1/recommendations` with reasons, streamed
(`stream: true`; TTFR = time to the first event, the ranked items), 30 % without reasons, 30 % chat turns
(`/v1/chat/completions`, reasons on), k = {result['k']}, random ml-100k users. Cells run interleaved
(clients × backend). Latencies are client-side, of answered requests, in seconds (p50 / p95).

| backend | clients | requests | with reasons ok (lists/s) | with reasons p50 / p95 | TTFR p50 / p95 | reasons missing | without reasons ok: p50 / p95 | chat ok: p50 / p95 | errors / 5xx / 429 | load |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Raw per-cell numbers and RSS samples: `{Path(result['out']).name}.json`.
"""


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
